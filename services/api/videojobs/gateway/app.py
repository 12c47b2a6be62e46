"""The REST gateway: /video/* routes mapped onto the gRPC JobService (a client, not a second implementation).

REST shapes live here: the multipart form, the response envelopes and the
problem+json errors. The documents themselves (job, results, capabilities) are
the contract's types from ``videojobs.common``; gRPC answers are converted by
``videojobs.common.wire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any, AsyncIterator, BinaryIO, Iterator, Optional

import anyio
import grpc
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from videojobs.common import errors, schemas, wire
from videojobs.common.config import Settings
from videojobs.common.errors import FieldViolation, InvalidOptions, TooManyUploads, UploadTimeout, UploadTooLarge
from videojobs.common.job import JobStatus
from videojobs.common.observability import tracing
from videojobs.common.observability.metrics import refusals_counted
from videojobs.common.frames import MAX_IMAGE_MESSAGE_BYTES
from videojobs.common.options import AnalysisOptions
from videojobs.common.pipelines import DEFAULT_PIPELINE, PIPELINES, get_pipeline
from videojobs.common.resources import Capabilities, JobResource
from videojobs.common.serving import KEEPALIVE_CLIENT_OPTIONS
from videojobs.common.results import MAX_PAGE_SIZE, JobResults, ResultsDocument, WholeResultsJson
from videojobs.gateway.params import JobId
from videojobs.gateway.problems import (
    API_CALL_PROBLEMS,
    ProblemType,
    install_problem_handlers,
    problem_catalogue,
    problem_responses,
)
from videojobs.gateway.auth import Metadata, caller_metadata, reader_metadata
from videojobs.gateway.metrics import RequestMetrics, metrics_endpoint
from videojobs.gateway.upload import FILE_FIELD, MultipartSpool, SpoolBudget, SpoolClaim, boundary_of
from videojobs.gateway.deadline import DefaultDeadline
from videojobs.gateway.viewer import install_viewer
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc


class SubmitAccepted(BaseModel):
    job_id: str


class JobList(BaseModel):
    """One page of the caller's jobs, newest first."""

    jobs: list[JobResource]
    next_page_token: str = Field("", description="Pass as page_token for the next page; empty on the last.")


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
            "callback_url": {"type": "string", "format": "uri", "maxLength": 2048,
                             "description": "Receives one signed POST (Standard Webhooks) when the job is final."},
        },
    }


log = logging.getLogger(__name__)
# The media type of a JSON Schema document (draft 2020-12, section 14.2).
SCHEMA_JSON = "application/schema+json"
_JOB_ID_PROBLEMS = (errors.UNAUTHENTICATED, errors.INVALID_JOB_ID, errors.JOB_NOT_FOUND, *API_CALL_PROBLEMS)


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
    spool_budget = SpoolBudget(settings.upload_spool_bytes)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(
            api_target, interceptors=[*tracing.grpc_aio_client_interceptors(),
                                      DefaultDeadline(settings.api_call_timeout_seconds)],
            options=[("grpc.max_receive_message_length", MAX_IMAGE_MESSAGE_BYTES), *KEEPALIVE_CLIENT_OPTIONS])
        state["stub"] = jobs_pb2_grpc.JobServiceStub(channel)
        state["health"] = health_pb2_grpc.HealthStub(channel)
        # Uploads go through the synchronous client (see _forward_upload).
        upload_channel = grpc.insecure_channel(api_target, options=KEEPALIVE_CLIENT_OPTIONS)
        state["upload_stub"] = jobs_pb2_grpc.JobServiceStub(tracing.traced_channel(upload_channel))
        try:
            yield
        finally:
            upload_channel.close()
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
    install_viewer(app, lambda: state["stub"])

    @app.post(
        "/video/submit", status_code=202, response_model=SubmitAccepted, summary="Submit a video for analysis",
        openapi_extra={"requestBody": {"required": True,
                                       "content": {"multipart/form-data": {"schema": submit_form_schema()}}}},
        responses=problem_responses(errors.UNAUTHENTICATED, errors.INVALID_UPLOAD,
                                    errors.UPLOAD_TOO_LARGE, errors.UNSUPPORTED_MEDIA_TYPE, errors.INVALID_OPTIONS,
                                    errors.UNKNOWN_CLASS, errors.UNKNOWN_LANGUAGE, errors.INVALID_CALLBACK_URL,
                                    errors.IDEMPOTENCY_CONFLICT, errors.UPLOAD_TIMEOUT, errors.TOO_MANY_UPLOADS,
                                    errors.TOO_MANY_JOBS, *API_CALL_PROBLEMS),
    )
    async def submit(
        request: Request,
        metadata: Metadata = Depends(caller_metadata),
        idempotency_key: Optional[str] = Header(
            None, max_length=128, description="Retrying with the same key within 24 h returns the first job."),
    ) -> JSONResponse:
        """Upload a video as multipart `file` (+ `pipeline_id`, options, `callback_url`). Returns the job id at once.

        A retry with the same `Idempotency-Key` returns the first job's id (202) instead of a new job."""
        with refusals_counted():  # refusals of the api arrive as gRPC errors and are counted there
            response = await _submit(request, metadata, idempotency_key)
        return JSONResponse({"job_id": response.job_id}, status_code=202,
                            headers={"Location": f"/video/status/{response.job_id}"})

    async def _submit(request: Request, metadata: Metadata, idempotency_key: str | None) -> jobs_pb2.SubmitResponse:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            raise UploadTooLarge(max_upload_bytes)
        if upload_slots.locked():
            raise TooManyUploads(settings.max_concurrent_uploads)
        async with upload_slots:
            spool = MultipartSpool(boundary_of(request.headers.get("content-type", "")), max_upload_bytes)
            try:
                with spool_budget.claim() as claim:
                    if length and length.isdigit():  # refused before a byte is read if it cannot fit
                        claim.up_to(int(length))
                    await _receive(request, spool, settings.upload_idle_timeout_seconds,
                                   settings.upload_total_timeout_seconds, claim)
                video = spool.finish()
                spec = _job_spec(spool.fields, spool.filename or "")
                spec.request_id = idempotency_key or ""
                response = await _forward_upload(state["upload_stub"], spec, video, chunk_bytes, metadata,
                                                 settings.upload_total_timeout_seconds)
            finally:
                spool.close()
        return response

    @app.get("/video/status/{job_id}", response_model=JobResource, summary="A job's status and progress",
             responses=problem_responses(*_JOB_ID_PROBLEMS))
    async def status(job_id: JobId, metadata: Metadata = Depends(reader_metadata)) -> JobResource:
        """`progress` is the fraction of the frames to analyse that are done (0.0..1.0); a PENDING job shows its
        `queue_position`, PENDING and RUNNING ones an `eta_seconds`, final ones their `expires_at`."""
        response = await state["stub"].GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id), metadata=metadata)
        return wire.job_from_pb(response.job)

    @app.get("/video/jobs", response_model=JobList, summary="The caller's jobs, newest first",
             responses=problem_responses(errors.UNAUTHENTICATED, errors.INVALID_REQUEST,
                                         *API_CALL_PROBLEMS))
    async def list_jobs(
        status: Optional[JobStatus] = Query(default=None, description="Only jobs in this state."),
        page_size: Optional[int] = Query(default=None, ge=1, le=1000, description="Jobs per page (default 50)."),
        page_token: str = Query(default="", max_length=256, description="next_page_token of the previous page."),
        metadata: Metadata = Depends(caller_metadata),
    ) -> JobList:
        """Paged with opaque tokens that stay valid while new jobs arrive."""
        reply = await state["stub"].ListJobs(jobs_pb2.ListJobsRequest(
            page_size=page_size or 0, page_token=page_token,
            status=wire.status_to_pb(status) if status else 0), metadata=metadata)
        return JobList(jobs=[wire.job_from_pb(j) for j in reply.jobs], next_page_token=reply.next_page_token)

    @app.post("/video/cancel/{job_id}", response_model=JobResource, summary="Cancel a PENDING or RUNNING job",
              responses=problem_responses(*_JOB_ID_PROBLEMS, errors.JOB_STATE_CONFLICT))
    async def cancel(job_id: JobId, metadata: Metadata = Depends(caller_metadata)) -> JobResource:
        """A PENDING job never runs; a RUNNING one stops at its next batch. A final job is 409 with its status."""
        reply = await state["stub"].CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), metadata=metadata)
        return wire.job_from_pb(reply.job)

    @app.delete("/video/jobs/{job_id}", status_code=204, summary="Delete a job, its input and its results",
                responses=problem_responses(*_JOB_ID_PROBLEMS))
    async def delete(job_id: JobId, metadata: Metadata = Depends(caller_metadata)) -> Response:
        """Cancels the job if it is not final, then removes it; its status answers 404 afterwards."""
        await state["stub"].DeleteJob(jobs_pb2.DeleteJobRequest(job_id=job_id), metadata=metadata)
        return Response(status_code=204)

    @app.get("/video/results/{job_id}", response_model=JobResults, summary="Results of a finished job",
             responses=problem_responses(*_JOB_ID_PROBLEMS, errors.RESULTS_NOT_READY,
                                         errors.INVALID_REQUEST))
    async def results(
        job_id: JobId,
        page_size: Optional[int] = Query(default=None, ge=1, le=MAX_PAGE_SIZE,
                                         description="Frames per page; omit for all frames in one answer."),
        page_token: str = Query(default="", max_length=64, description="next_page_token of the previous page."),
        metadata: Metadata = Depends(reader_metadata),
    ) -> Any:
        """The results document: `results` is the list of analysed frames in order.

        Without `page_size`, a document longer than one page is sent as it is read from the api, a page at
        a time (chunked); if the api fails part-way, the answer is cut short rather than completed."""
        stub = state["stub"]
        first = await stub.GetResults(
            jobs_pb2.GetResultsRequest(job_id=job_id, page_size=page_size or MAX_PAGE_SIZE, page_token=page_token),
            metadata=metadata)
        document = wire.results_page_from_pb(first)
        if page_size is None and first.next_page_token:
            return StreamingResponse(_whole_results(stub, first, document, metadata), media_type="application/json")
        return {
            "job_id": first.job_id,
            "status": wire.status_from_pb(first.status),
            **dict(document),
            "next_page_token": first.next_page_token,
            "total_size": first.total_size,
        }

    @app.get("/video/capabilities", response_model=Capabilities, summary="What the service can do",
             responses=problem_responses(errors.UNAUTHENTICATED, *API_CALL_PROBLEMS))
    async def capabilities(metadata: Metadata = Depends(caller_metadata)) -> Capabilities:
        """Pipelines, the detector's class names, installed OCR languages, limits and accepted formats."""
        return wire.capabilities_from_pb(await state["stub"].GetCapabilities(jobs_pb2.GetCapabilitiesRequest(),
                                                                            metadata=metadata))

    @app.get("/video/schemas/{name}.json", summary="JSON Schema of a contract document",
             response_class=FileResponse,
             responses={200: {"description": "The document's JSON Schema (draft 2020-12)",
                              "content": {SCHEMA_JSON: {"schema": {"type": "object"}}}},
                        **problem_responses(errors.ROUTE_NOT_FOUND)})
    async def schema(name: str = PathParam(description="Which document; any other name is not found.",
                                           json_schema_extra={"enum": list(schemas.SCHEMAS)})) -> FileResponse:
        """`results` (the results document), `job` (the status answer) or `capabilities`."""
        if name not in schemas.SCHEMAS:
            raise _not_found(f"no schema {name[:64]!r}; available: {', '.join(schemas.SCHEMAS)}")
        return FileResponse(schemas.path_of(name), media_type=SCHEMA_JSON)

    @app.get("/problems/{slug}", response_model=ProblemType, summary="Description of an error type",
             responses=problem_responses(errors.ROUTE_NOT_FOUND))
    async def problem_type(slug: str = PathParam(description="A problem's slug, the last part of its `type`.",
                                                 json_schema_extra={"enum": list(errors.PROBLEMS)})) -> ProblemType:
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

    _link_job_routes(app)
    return app


# Routes that take the job id a submit returns (OpenAPI links: clients and stateful testers follow them).
_JOB_ROUTES = {"status": "GetJobStatus", "results": "GetJobResults", "cancel": "CancelJob", "delete": "DeleteJob",
               "view": "ViewJob", "frame_image": "GetFrameImage", "contact_sheet": "GetContactSheet"}


def _link_job_routes(app: FastAPI) -> None:
    """The submit answer's `job_id` links to every route of that job (by operationId)."""
    routes = {r.name: r for r in app.routes if isinstance(r, APIRoute)}
    links = {}
    for name, link in _JOB_ROUTES.items():
        route = routes[name]
        links[link] = {"operationId": route.operation_id or route.unique_id,
                       "parameters": {"job_id": "$response.body#/job_id"},
                       "description": f"The `job_id` of the answer, as `{name}`'s path parameter."}
    submit = routes["submit"]
    submit.responses = {**submit.responses, 202: {**submit.responses.get(202, {}), "links": links}}


def _not_found(detail: str) -> Exception:
    return HTTPException(404, detail)


async def _receive(request: Request, spool: MultipartSpool, idle_timeout: float, total_timeout: float,
                   claim: SpoolClaim) -> None:
    """Feed the body to the spool, each chunk claimed from the spool's budget first; a client that stalls
    or drags on is cut off (408)."""
    chunks = request.stream().__aiter__()
    received = 0
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
        received += len(chunk)
        claim.up_to(received)
        spool.write(chunk)


async def _whole_results(stub: jobs_pb2_grpc.JobServiceStub, first: jobs_pb2.GetResultsResponse,
                         document: ResultsDocument, metadata: Metadata) -> AsyncIterator[bytes]:
    """The whole results answer, written a page of frames at a time as the pages come from the api, so the
    gateway holds one page, not the document (100,000 frames parse into about 990 MiB of objects)."""
    answer = WholeResultsJson(first.job_id, wire.status_from_pb(first.status), document)
    yield answer.start().encode()
    page, frames = first, document.results
    while True:
        yield answer.frames(frames).encode()
        if not page.next_page_token:
            break
        try:
            page = await stub.GetResults(jobs_pb2.GetResultsRequest(
                job_id=first.job_id, page_size=MAX_PAGE_SIZE, page_token=page.next_page_token), metadata=metadata)
        except grpc.RpcError as exc:
            log.warning("results of job %s cut short after %d of %d frames: %s", first.job_id, answer.written,
                        first.total_size, exc.code())
            raise
        frames = wire.results_page_from_pb(page).results
    yield answer.end().encode()


def _job_spec(fields: dict[str, list[str]], filename: str) -> jobs_pb2.JobSpec:
    """The form fields parsed once: pipeline from the registry, options into AnalysisOptions."""
    allowed = {"pipeline_id", "callback_url", *AnalysisOptions.field_names()}
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
                           if name not in ("pipeline_id", "callback_url")}
    options = AnalysisOptions.parse(raw)
    return jobs_pb2.JobSpec(pipeline_id=pipeline.pipeline_id, options=wire.options_to_pb(options), filename=filename,
                            callback_url=(fields.get("callback_url") or [""])[0])


async def _forward_upload(stub: jobs_pb2_grpc.JobServiceStub, spec: jobs_pb2.JobSpec, video: BinaryIO,
                          chunk_bytes: int, metadata: Metadata, timeout: float) -> jobs_pb2.SubmitResponse:
    """Stream the spooled video to the api's Submit, spec first, on the synchronous gRPC client in a
    worker thread. grpc.aio's client turns a refusal that arrives while it is still writing (no key, no
    free upload slot) into a bare INTERNAL ("Internal error from Core", a 502 here) about once in 50-500
    uploads (the header fuzzer found it); the synchronous client reports the api's own answer."""

    def messages() -> Iterator[jobs_pb2.SubmitRequest]:
        yield jobs_pb2.SubmitRequest(spec=spec)
        while chunk := video.read(chunk_bytes):
            yield jobs_pb2.SubmitRequest(chunk=chunk)

    return await anyio.to_thread.run_sync(functools.partial(stub.Submit, messages(), metadata=metadata,
                                                            timeout=timeout))
