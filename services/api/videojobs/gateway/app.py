"""The REST gateway: /video/* routes mapped onto the gRPC JobService (a client, not a second implementation)."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, BinaryIO

import anyio
import grpc
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from videojobs.common import wire
from videojobs.common.errors import InvalidOptions, InvalidUpload, UploadTooLarge
from videojobs.common.options import validate_pipeline_id
from videojobs.common.results import MAX_PAGE_SIZE
from videojobs.gateway.upload import MultipartSpool, boundary_of
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

OPTION_FIELDS = ("sample_fps", "max_frames", "min_confidence", "classes", "ocr_lang", "imgsz")

_HTTP_FOR_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "An MP4 video (checked by content)."},
                        "pipeline_id": {"type": "string", "enum": ["yolo_ocr", "yolo", "ocr"], "default": "yolo_ocr"},
                        "sample_fps": {"type": "number", "minimum": 0, "description": "Frames per second to analyse; 0 = every frame. Default 1."},
                        "max_frames": {"type": "integer", "minimum": 0, "description": "Upper bound on analysed frames; 0 = none."},
                        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.25},
                        "classes": {"type": "string", "description": "Comma-separated class names to keep, e.g. 'bottle,person'."},
                        "ocr_lang": {"type": "string", "default": "eng"},
                        "imgsz": {"type": "integer", "default": 640},
                    },
                }
            }
        },
    }
}


class ApiError(Exception):
    def __init__(self, http_status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message


def _error(http_status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=http_status, content={"error": code, "detail": message})


def create_app(api_target: str, max_upload_bytes: int, chunk_bytes: int = 1024 * 1024) -> FastAPI:
    """The gateway app; it opens one gRPC channel to `api_target` for its lifetime."""
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(api_target)
        state["stub"] = jobs_pb2_grpc.JobServiceStub(channel)
        state["health"] = health_pb2_grpc.HealthStub(channel)
        try:
            yield
        finally:
            await channel.close()

    app = FastAPI(
        title="videojobs",
        version="1",
        summary="Asynchronous video analysis: YOLO detections and Tesseract OCR per frame.",
        lifespan=lifespan,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.http_status, exc.code, exc.message)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc_error(_request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        code = exc.code()
        return _error(_HTTP_FOR_GRPC.get(code, 502), code.name.lower(), exc.details() or code.name)

    @app.post("/video/submit", status_code=202, openapi_extra=_SUBMIT_BODY, summary="Submit an MP4 for analysis")
    async def submit(request: Request) -> dict[str, str]:
        """Upload a video as multipart `file` (+ `pipeline_id` and options). Returns the job id at once."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            raise ApiError(413, "upload_too_large", str(UploadTooLarge(max_upload_bytes)))
        try:
            spool = MultipartSpool(boundary_of(request.headers.get("content-type", "")), max_upload_bytes)
        except InvalidUpload as exc:
            raise ApiError(415, "unsupported_media_type", str(exc)) from None
        try:
            try:
                async for chunk in request.stream():
                    spool.write(chunk)
                video = spool.finish()
            except UploadTooLarge as exc:
                raise ApiError(413, "upload_too_large", str(exc)) from None
            except InvalidUpload as exc:
                status = 415 if "not an MP4" in str(exc) else 400
                raise ApiError(status, "invalid_upload", str(exc)) from None
            spec = _job_spec(spool.fields, spool.filename or "")
            response = await state["stub"].Submit(_upload_messages(spec, video, chunk_bytes))
            return {"job_id": response.job_id}
        finally:
            spool.close()

    @app.get("/video/status/{job_id}", summary="A job's status and progress")
    async def status(job_id: str) -> dict[str, Any]:
        """`progress` is the fraction of the frames to analyse that are done (0.0..1.0)."""
        response = await state["stub"].GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id))
        return wire.status_to_json(response)

    @app.get("/video/results/{job_id}", summary="Per-frame results of a finished job")
    async def results(
        job_id: str,
        page_size: int | None = Query(default=None, ge=1, le=MAX_PAGE_SIZE, description="Frames per page; omit for all frames."),
        page_token: str = Query(default="", description="next_page_token of the previous page"),
    ) -> dict[str, Any]:
        """`results` is the list of analysed frames in order; without `page_size` it holds all of them."""
        stub = state["stub"]
        first = await stub.GetResults(
            jobs_pb2.GetResultsRequest(job_id=job_id, page_size=page_size or MAX_PAGE_SIZE, page_token=page_token)
        )
        frames = [wire.frame_to_json(f) for f in first.frames]
        token = first.next_page_token
        while token and page_size is None:
            page = await stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_size=MAX_PAGE_SIZE, page_token=token))
            frames.extend(wire.frame_to_json(f) for f in page.frames)
            token = page.next_page_token
        return {
            "job_id": first.job_id,
            "status": wire.status_from_pb(first.status).value,
            **wire.results_meta_to_json(first),
            "results": frames,
            "next_page_token": token or None,
        }

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            reply = await state["health"].Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            ready = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            ready = False
        return JSONResponse(status_code=200 if ready else 503, content={"status": "ready" if ready else "not ready"})

    return app


def _job_spec(fields: dict[str, str], filename: str) -> jobs_pb2.JobSpec:
    unknown = sorted(set(fields) - {"pipeline_id", *OPTION_FIELDS})
    try:
        if unknown:
            raise InvalidOptions(f"unknown form field(s): {', '.join(unknown)}")
        pipeline_id = validate_pipeline_id(fields.get("pipeline_id"))
        # Validated here (options_to_pb parses them), so a bad value costs no upload to the api.
        options = wire.options_to_pb({k: fields[k] for k in OPTION_FIELDS if fields.get(k)})
    except InvalidOptions as exc:
        raise ApiError(422, "invalid_options", str(exc)) from None
    return jobs_pb2.JobSpec(pipeline_id=pipeline_id, options=options, filename=filename)


async def _upload_messages(spec: jobs_pb2.JobSpec, video: BinaryIO, chunk_bytes: int) -> AsyncIterator[jobs_pb2.SubmitRequest]:
    yield jobs_pb2.SubmitRequest(spec=spec)
    while True:
        chunk = await anyio.to_thread.run_sync(video.read, chunk_bytes)
        if not chunk:
            return
        yield jobs_pb2.SubmitRequest(chunk=chunk)
