"""The REST gateway: /video/* routes mapped onto the gRPC JobService (a client, not a second implementation).

REST shapes live here: the multipart form, the response envelopes and the
problem+json errors. The documents themselves (job, results, capabilities) are
the contract's types from ``videojobs.common``; gRPC answers are converted by
``videojobs.common.wire``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, BinaryIO, Optional

import anyio
import grpc
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException

from videojobs.common import errors, schemas, wire
from videojobs.common.config import Settings
from videojobs.common.errors import FieldViolation, InvalidOptions, TooManyUploads, UploadTimeout, UploadTooLarge
from videojobs.common.job import JobStatus
from videojobs.common.observability import tracing
from videojobs.common.observability.metrics import refusals_counted
from videojobs.common.options import AnalysisOptions
from videojobs.common.pipelines import DEFAULT_PIPELINE, PIPELINES, get_pipeline
from videojobs.common.resources import Capabilities, JobResource
from videojobs.common.results import MAX_PAGE_SIZE, ResultsDocument
from videojobs.gateway.problems import (
    ProblemType,
    install_problem_handlers,
    problem_catalogue,
    problem_responses,
)
from videojobs.gateway.metrics import RequestMetrics, metrics_endpoint
from videojobs.gateway.upload import FILE_FIELD, MultipartSpool, boundary_of
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc


class SubmitAccepted(BaseModel):
    job_id: str


# The results answer: the results document with the job's id and status first and the
# paging members last (built from the document's own fields, so the two cannot drift).
JobResults = create_model(
    "JobResults",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A finished job's results document, plus its id, status and paging.",
    job_id=(str, ...),
    status=(JobStatus, ...),
    **{name: (info.annotation, info) for name, info in ResultsDocument.model_fields.items()},
    next_page_token=(str, Field("", description="Pass as page_token for the next page; empty on the last.")),
    total_size=(int, Field(description="Analysed frames in the whole document.")),
)


def submit_form_schema() -> dict[str, Any]:
    """The multipart form, derived from the pipeline registry and the AnalysisOptions fields."""
    option_props = AnalysisOptions.model_json_schema()["properties"]
    return {
        "type": "object",
        "required": [FILE_FIELD],
        "properties": {
            FILE_FIELD: {"type": "string", "format": "binary",
                         "description": "The video: MP4/MOV/M4V, MKV, WebM or AVI, recognised by content."},
            "pipeline_id": {"type": "string", "enum": list(PIPELINES), "default": DEFAULT_PIPELINE,
                            "description": "; ".join(f"{p.pipeline_id}: {p.description}" for p in PIPELINES.values())},
            **{name: {k: v for k, v in prop.items() if k != "title"} for name, prop in option_props.items()},
        },
    }


_JOB_ID_PROBLEMS = (errors.INVALID_JOB_ID, errors.JOB_NOT_FOUND, errors.SERVICE_UNAVAILABLE)


def create_app(settings: Settings, api_target: str | None = None) -> FastAPI:
    """The gateway app; it opens one gRPC channel to the api (`api_target`, default the setting) for its lifetime.

    Uploads are bounded: at most `max_concurrent_uploads` bodies are read at once (429
    beyond), each must keep sending (idle timeout) and finish in time (total timeout),
    and the multipart form itself is size-capped (`gateway.upload`).
    """
    api_target = api_target or settings.api_target
    max_upload_bytes = settings.max_upload_bytes
    chunk_bytes = settings.upload_chunk_bytes
    upload_slots = asyncio.Semaphore(settings.max_concurrent_uploads)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(api_target, interceptors=tracing.grpc_aio_client_interceptors() or None)
        state["stub"] = jobs_pb2_grpc.JobServiceStub(channel)
        state["health"] = health_pb2_grpc.HealthStub(channel)
        try:
            yield
        finally:
            await channel.close()

    app = FastAPIOffline(
        title="videojobs",
        version="1",
        summary="Asynchronous video analysis: YOLO detections and Tesseract OCR per frame.",
        description="Errors are RFC 9457 `application/problem+json`; GET a problem's `type` for its description.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.add_middleware(RequestMetrics)
    app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)
    tracing.instrument_fastapi(app)

    @app.post(
        "/video/submit", status_code=202, response_model=SubmitAccepted, summary="Submit a video for analysis",
        openapi_extra={"requestBody": {"required": True,
                                       "content": {"multipart/form-data": {"schema": submit_form_schema()}}}},
        responses=problem_responses(errors.BAD_REQUEST, errors.INVALID_UPLOAD, errors.UPLOAD_TOO_LARGE,
                                    errors.UNSUPPORTED_MEDIA_TYPE, errors.INVALID_OPTIONS, errors.UNKNOWN_CLASS,
                                    errors.UNKNOWN_LANGUAGE, errors.UPLOAD_TIMEOUT, errors.TOO_MANY_UPLOADS,
                                    errors.SERVICE_UNAVAILABLE),
    )
    async def submit(request: Request) -> JSONResponse:
        """Upload a video as multipart `file` (+ `pipeline_id` and options). Returns the job id at once."""
        with refusals_counted():  # refusals of the api arrive as gRPC errors and are counted there
            response = await _submit(request)
        return JSONResponse({"job_id": response.job_id}, status_code=202,
                            headers={"Location": f"/video/status/{response.job_id}"})

    async def _submit(request: Request) -> jobs_pb2.SubmitResponse:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            raise UploadTooLarge(max_upload_bytes)
        if upload_slots.locked():
            raise TooManyUploads(settings.max_concurrent_uploads)
        async with upload_slots:
            spool = MultipartSpool(boundary_of(request.headers.get("content-type", "")), max_upload_bytes)
            try:
                await _receive(request, spool, settings.upload_idle_timeout_seconds,
                               settings.upload_total_timeout_seconds)
                video = spool.finish()
                spec = _job_spec(spool.fields, spool.filename or "")
                response = await state["stub"].Submit(_upload_messages(spec, video, chunk_bytes))
            finally:
                spool.close()
        return response

    @app.get("/video/status/{job_id}", response_model=JobResource, summary="A job's status and progress",
             responses=problem_responses(*_JOB_ID_PROBLEMS))
    async def status(job_id: str) -> JobResource:
        """`progress` is the fraction of the frames to analyse that are done (0.0..1.0)."""
        response = await state["stub"].GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id))
        return wire.job_from_pb(response.job)

    @app.get("/video/results/{job_id}", response_model=JobResults, summary="Results of a finished job",
             responses=problem_responses(errors.BAD_REQUEST, *_JOB_ID_PROBLEMS, errors.RESULTS_NOT_READY,
                                         errors.INVALID_REQUEST))
    async def results(
        job_id: str,
        page_size: Optional[int] = Query(default=None, ge=1, le=MAX_PAGE_SIZE,
                                         description="Frames per page; omit for all frames in one answer."),
        page_token: str = Query(default="", max_length=64, description="next_page_token of the previous page."),
    ) -> dict[str, Any]:
        """The results document: `results` is the list of analysed frames in order."""
        stub = state["stub"]
        first = await stub.GetResults(
            jobs_pb2.GetResultsRequest(job_id=job_id, page_size=page_size or MAX_PAGE_SIZE, page_token=page_token))
        document = wire.results_page_from_pb(first)
        frames = list(document.results)
        token = first.next_page_token
        while token and page_size is None:
            page = await stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_size=MAX_PAGE_SIZE,
                                                                    page_token=token))
            frames.extend(wire.results_page_from_pb(page).results)
            token = page.next_page_token
        return {
            "job_id": first.job_id,
            "status": wire.status_from_pb(first.status),
            **dict(document.model_copy(update={"results": frames})),
            "next_page_token": token,
            "total_size": first.total_size,
        }

    @app.get("/video/capabilities", response_model=Capabilities, summary="What the service can do",
             responses=problem_responses(errors.SERVICE_UNAVAILABLE))
    async def capabilities() -> Capabilities:
        """Pipelines, the detector's class names, installed OCR languages, limits and accepted formats."""
        return wire.capabilities_from_pb(await state["stub"].GetCapabilities(jobs_pb2.GetCapabilitiesRequest()))

    @app.get("/video/schemas/{name}.json", summary="JSON Schema of a contract document",
             responses=problem_responses(errors.ROUTE_NOT_FOUND))
    async def schema(name: str) -> FileResponse:
        """`results` (the results document), `job` (the status answer) or `capabilities`."""
        if name not in schemas.SCHEMAS:
            raise _not_found(f"no schema {name[:64]!r}; available: {', '.join(schemas.SCHEMAS)}")
        return FileResponse(schemas.path_of(name), media_type="application/schema+json")

    @app.get("/problems/{slug}", response_model=ProblemType, summary="Description of an error type")
    async def problem_type(slug: str) -> ProblemType:
        for entry in problem_catalogue():
            if entry.type == f"/problems/{slug}":
                return entry
        raise _not_found(f"no problem type {slug[:64]!r}")

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


def _not_found(detail: str) -> Exception:
    return HTTPException(404, detail)


async def _receive(request: Request, spool: MultipartSpool, idle_timeout: float, total_timeout: float) -> None:
    """Feed the body to the spool; a client that stalls or drags on is cut off (408)."""
    chunks = request.stream().__aiter__()
    deadline = anyio.current_time() + total_timeout
    while True:
        wait = min(idle_timeout, deadline - anyio.current_time())
        if wait <= 0:
            raise UploadTimeout(f"the upload took longer than {total_timeout:g} s")
        try:
            with anyio.fail_after(wait):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadTimeout(f"the upload sent nothing for {wait:g} s") from None
        spool.write(chunk)


def _job_spec(fields: dict[str, list[str]], filename: str) -> jobs_pb2.JobSpec:
    """The form fields parsed once: pipeline from the registry, options into AnalysisOptions."""
    allowed = {"pipeline_id", *AnalysisOptions.field_names()}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        shown = ", ".join(repr(u[:64]) for u in unknown[:10])
        raise InvalidOptions(f"unknown form field(s): {shown}",
                             [FieldViolation(u[:64], "unknown form field") for u in unknown[:10]])
    repeated = [name for name, values in fields.items() if len(values) > 1 and name != "classes"]
    if repeated:
        raise InvalidOptions(f"form field(s) given more than once: {', '.join(repeated)}",
                             [FieldViolation(name, "given more than once") for name in repeated])
    pipeline = get_pipeline((fields.get("pipeline_id") or [""])[0])
    raw: dict[str, Any] = {name: values if name == "classes" else values[0] for name, values in fields.items()
                           if name != "pipeline_id"}
    options = AnalysisOptions.parse(raw)
    return jobs_pb2.JobSpec(pipeline_id=pipeline.pipeline_id, options=wire.options_to_pb(options), filename=filename)


async def _upload_messages(spec: jobs_pb2.JobSpec, video: BinaryIO, chunk_bytes: int) -> AsyncIterator[jobs_pb2.SubmitRequest]:
    yield jobs_pb2.SubmitRequest(spec=spec)
    while True:
        chunk = await anyio.to_thread.run_sync(video.read, chunk_bytes)
        if not chunk:
            return
        yield jobs_pb2.SubmitRequest(chunk=chunk)
