"""The results viewer: a page that shows what the model saw, and the images it is built from.

``GET /video/view/{job_id}`` is a static page (HTML, JS and CSS shipped in this
package, no CDN) that reads the job's status and results over the same REST routes
as any client, and frame images from ``GET /video/frames/{job_id}/{frame_index}.jpg``
(``?annotated=1`` draws the boxes server-side). ``GET /video/sheet/{job_id}.png`` is a
contact sheet of annotated frames. Pixels come from the api over gRPC (the gateway
never reads storage); errors are the contract's problem+json.

A Content-Security-Policy keeps the page to its own origin: it cannot load or send
anything elsewhere even if a result carried hostile text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import grpc
from fastapi import Depends, FastAPI, Path as PathParam, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

from videojobs.common import errors, wire
from videojobs.common.frames import SHEET_COLUMNS, SHEET_MAX_FRAMES, SHEET_TILE_WIDTH
from videojobs.common.job import parse_job_id
from videojobs.common.options import INT32_MAX
from videojobs.gateway.auth import Metadata, reader_metadata
from videojobs.gateway.params import JobId
from videojobs.gateway.problems import API_CALL_PROBLEMS, problem_responses
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

STATIC = Path(__file__).parent / "static"
ASSETS = {"viewer.js": "text/javascript", "viewer.css": "text/css", "key.js": "text/javascript"}
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# A COMPLETED job's frames never change; a private cache may keep them (an hour: a deleted job's
# images stop being served from the browser's cache soon enough).
IMAGE_CACHE = "private, max-age=3600"

_IMAGE_PROBLEMS = (errors.UNAUTHENTICATED, errors.INVALID_JOB_ID, errors.JOB_NOT_FOUND, errors.FRAME_NOT_FOUND, errors.RESULTS_NOT_READY,
                   errors.INVALID_REQUEST, *API_CALL_PROBLEMS)


def _page_problems() -> dict:
    """The viewer page's error answers; a browser asking for HTML without a key gets the key form (401)."""
    responses = problem_responses(errors.UNAUTHENTICATED, errors.INVALID_JOB_ID, errors.JOB_NOT_FOUND,
                                  *API_CALL_PROBLEMS)
    responses[401]["content"]["text/html"] = {"schema": {"type": "string"}}
    return responses


def _query_range(spec: tuple[int, int, int], description: str):
    default, low, high = spec
    return Query(default=None, ge=low, le=high, description=f"{description} ({low}..{high}, default {default}).")


def install_viewer(app: FastAPI, stub: Callable[[], jobs_pb2_grpc.JobServiceStub]) -> None:
    """Add the viewer page, its assets, frame images and contact sheets to the gateway."""
    page = (STATIC / "viewer.html").read_text(encoding="utf-8")
    key_form = (STATIC / "key.html").read_text(encoding="utf-8")

    @app.get("/video/view/{job_id}", response_class=HTMLResponse, summary="Results viewer (a page for people)",
             responses=_page_problems())
    async def view(request: Request, job_id: JobId, metadata: Metadata = Depends(reader_metadata)) -> HTMLResponse:
        """Frames with their boxes, a track timeline, searchable OCR text and filters. Works offline.

        A browser without a key (API keys on) gets a form that keeps the key in a cookie for the viewer."""
        try:
            job = (await stub().GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id), metadata=metadata)).job
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAUTHENTICATED and "text/html" in request.headers.get("accept", ""):
                return HTMLResponse(key_form, status_code=401, headers={
                    "Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"})
            raise
        # The id is a canonical UUID once the api has found the job: safe to put in the page.
        html = page.replace("{{job_id}}", parse_job_id(job.job_id))
        return HTMLResponse(html, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                           "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"})

    @app.get("/video/assets/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404)
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    @app.get("/video/frames/{job_id}/{frame_index}.jpg", summary="One analysed frame (JPEG)",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}},
                                                 **problem_responses(*_IMAGE_PROBLEMS)})
    async def frame_image(
        job_id: JobId,
        frame_index: int = PathParam(ge=0, le=INT32_MAX, description="An analysed frame's frame_index."),
        annotated: bool = Query(False, description="Draw the detections: boxes, classes, confidences, track ids."),
        metadata: Metadata = Depends(reader_metadata),
    ) -> Response:
        """The frame as the worker kept it while analysing, optionally annotated."""
        reply = await stub().GetFrameImage(jobs_pb2.GetFrameImageRequest(job_id=job_id, frame_index=frame_index,
                                                                         annotated=annotated), metadata=metadata)
        image = wire.image_from_pb(reply)
        return Response(image.data, media_type=image.content_type, headers={"Cache-Control": IMAGE_CACHE})

    @app.get("/video/sheet/{job_id}.png", summary="Contact sheet of annotated frames (PNG)",
             response_class=Response, responses={200: {"content": {"image/png": {}}},
                                                 **problem_responses(*_IMAGE_PROBLEMS)})
    async def contact_sheet(
        job_id: JobId,
        columns: int | None = _query_range(SHEET_COLUMNS, "Tiles per row"),
        tile_width: int | None = _query_range(SHEET_TILE_WIDTH, "Tile width in pixels"),
        max_frames: int | None = _query_range(SHEET_MAX_FRAMES, "Most frames shown, spread over the job"),
        metadata: Metadata = Depends(reader_metadata),
    ) -> Response:
        """A grid of annotated frames spread evenly over the job, for reports."""
        reply = await stub().GetContactSheet(jobs_pb2.GetContactSheetRequest(
            job_id=job_id, columns=columns or 0, tile_width=tile_width or 0, max_frames=max_frames or 0),
            metadata=metadata)
        image = wire.image_from_pb(reply)
        return Response(image.data, media_type=image.content_type, headers={"Cache-Control": IMAGE_CACHE})
