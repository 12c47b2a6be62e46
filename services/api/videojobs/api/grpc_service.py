"""The gRPC edge: JobService RPCs mapped onto the JobsService use cases.

Errors follow AIP-193: the status code of the error's problem, a message a
client may read, an ``ErrorInfo`` (domain ``videojobs``, reason = the problem,
metadata = its extension members as JSON) and a ``BadRequest`` with one field
violation per bad field.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any, Callable, Iterator

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from videojobs.api.auth import Authenticator
from videojobs.api.frames import FrameImages
from videojobs.api.rates import TenantRequestRate
from videojobs.api.service import JobRequest, JobsService, JobView
from videojobs.api.uploads import UploadLimiter
from videojobs.common import wire
from videojobs.common.frames import SheetLayout
from videojobs.common.errors import BadRequest, FieldViolation, VideoJobsError
from videojobs.common.job import JobStatus
from videojobs.common.observability.metrics import refusals_counted
from videojobs.common.resources import JobResource
from videojobs.common.tenants import Caller
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

log = logging.getLogger(__name__)

ERROR_DOMAIN = "videojobs"


def rpc_status_for(exc: VideoJobsError) -> status_pb2.Status:
    """The google.rpc.Status a domain error travels as."""
    problem = exc.problem
    code = grpc.StatusCode[problem.grpc_code]
    status = status_pb2.Status(code=code.value[0], message=exc.public_detail)
    metadata = {k: json.dumps(v) for k, v in exc.extensions().items() if k != "invalid_params"}
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=problem.reason, domain=ERROR_DOMAIN,
                                                          metadata=metadata))
    retry_after = exc.extensions().get("retry_after_seconds")
    if retry_after is not None:  # back-pressure: say when to come back (AIP-193 RetryInfo)
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": int(retry_after)}))
    if exc.violations:
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations
        ]))
    return status


class Unparsable:
    """Stands in for a request message whose bytes do not parse; the RPC answers INVALID_ARGUMENT."""

    def __init__(self, message_type: str, error: Exception) -> None:
        self.message_type = message_type
        self.error = error

    def bad_request(self) -> BadRequest:
        return BadRequest(f"the {self.message_type} message cannot be parsed ({type(self.error).__name__})")


class LenientRequests(grpc.ServerInterceptor):
    """Request bytes that do not parse reach the RPC as `Unparsable` instead of failing in gRPC's
    deserializer, which would answer a bare INTERNAL ("Exception deserializing request!")."""

    def __init__(self, service: str) -> None:
        self._prefix = f"/{service}/"

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None \
                or not handler_call_details.method.startswith(self._prefix):
            return handler
        return handler._replace(request_deserializer=_lenient(handler.request_deserializer))


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    message_type = getattr(getattr(parse, "__self__", None), "__name__", "request")

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # noqa: BLE001  (DecodeError, or whatever the runtime raises on garbage)
            return Unparsable(message_type, exc)

    return lenient


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Authenticates the caller, counts the call against its tenant's request rate, then runs the RPC with it.

    Domain errors become their rich gRPC status; anything else is INTERNAL (logged, not shown).
    A request that did not parse (`Unparsable`) is INVALID_ARGUMENT.
    """

    @functools.wraps(method)
    def wrapper(self: "JobServiceServicer", request: Any, context: grpc.ServicerContext) -> Any:
        try:
            authorization = next((value for key, value in context.invocation_metadata() or ()
                                  if key == "authorization"), None)
            caller = self._auth.authenticate(authorization if isinstance(authorization, str) else None)
            self._rates.admit(caller)
            if isinstance(request, Unparsable):
                raise request.bad_request()
            return method(self, request, context, caller)
        except VideoJobsError as exc:
            if exc.problem.http_status >= 500:
                log.warning("%s: %s", method.__name__, exc)
            context.abort_with_status(rpc_status.to_status(rpc_status_for(exc)))
        except grpc.RpcError:
            # The call ended under us (client gone, stream cut by the upload watchdog): nothing to answer.
            if context.is_active():
                raise
            context.abort(grpc.StatusCode.CANCELLED, "the stream was cut")
        except Exception:  # noqa: BLE001
            log.exception("%s failed", method.__name__)
            internal = VideoJobsError("internal error; the server's logs have the detail")
            context.abort_with_status(rpc_status.to_status(rpc_status_for(internal)))

    return wrapper


class JobServiceServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, jobs: JobsService, auth: Authenticator, uploads: UploadLimiter, frames: FrameImages,
                 rates: TenantRequestRate) -> None:
        self._jobs = jobs
        self._auth = auth
        self._rates = rates
        self._uploads = uploads
        self._frames = frames

    @_rpc
    def Submit(self, request_iterator: Iterator[jobs_pb2.SubmitRequest], context: grpc.ServicerContext,
               caller: Caller):
        """Upload stream: a JobSpec first, then the video bytes in order.

        Bounded: RESOURCE_EXHAUSTED (TOO_MANY_UPLOADS) when every upload slot is taken;
        a stream idle or open too long is cancelled.
        """
        with refusals_counted(), self._uploads.upload(context) as handle:
            first = next(request_iterator, None)
            if isinstance(first, Unparsable):
                _drain(request_iterator)
                raise first.bad_request()
            if first is None or first.WhichOneof("payload") != "spec":
                raise BadRequest("the first Submit message must carry the job spec")
            self._uploads.touch(handle)
            try:
                job = self._jobs.submit_upload(caller, _job_request(first.spec),
                                               _chunks(request_iterator, self._uploads, handle))
            except VideoJobsError:
                _drain(request_iterator)
                raise
        return jobs_pb2.SubmitResponse(job_id=job.job_id, status=wire.status_to_pb(job.status))

    @_rpc
    def SubmitFromStorage(self, request: jobs_pb2.SubmitFromStorageRequest, context: grpc.ServicerContext,
                          caller: Caller):
        """A job for a video already in object storage."""
        job = self._jobs.submit_from_storage(caller, _job_request(request.spec), request.input_key)
        return jobs_pb2.SubmitFromStorageResponse(job_id=job.job_id, status=wire.status_to_pb(job.status))

    @_rpc
    def GetStatus(self, request: jobs_pb2.GetStatusRequest, context: grpc.ServicerContext, caller: Caller):
        """A job's status, progress and standing (queue position, ETA, expiry)."""
        return jobs_pb2.GetStatusResponse(job=_job_pb(self._jobs.get_status(caller, request.job_id)))

    @_rpc
    def GetResults(self, request: jobs_pb2.GetResultsRequest, context: grpc.ServicerContext, caller: Caller):
        """One page of a COMPLETED job's results document."""
        page = self._jobs.get_results(caller, request.job_id, request.page_size, request.page_token)
        return wire.results_page_to_pb(page.job.job_id, page.job.status, page.page, page.total_size,
                                       page.next_page_token)

    @_rpc
    def GetCapabilities(self, request: jobs_pb2.GetCapabilitiesRequest, context: grpc.ServicerContext,
                        caller: Caller):
        """Pipelines, detector classes, OCR languages, limits and accepted formats."""
        return wire.capabilities_to_pb(self._jobs.capabilities())

    @_rpc
    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext, caller: Caller):
        """The caller's jobs, newest first, optionally in one state; paged by opaque keyset tokens."""
        views, token = self._jobs.list_jobs(caller, _status_filter(request.status), request.page_size,
                                            request.page_token)
        return wire.jobs_page_to_pb([_resource(v) for v in views], token)

    @_rpc
    def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext, caller: Caller):
        """PENDING or RUNNING -> CANCELLED; a final job is FAILED_PRECONDITION naming its status."""
        job = self._jobs.cancel_job(caller, request.job_id)
        return jobs_pb2.CancelJobResponse(job=_job_pb(JobView(job, self._jobs.standing(job))))

    @_rpc
    def DeleteJob(self, request: jobs_pb2.DeleteJobRequest, context: grpc.ServicerContext, caller: Caller):
        """Cancel if needed, then remove the job, its input and its results."""
        self._jobs.delete_job(caller, request.job_id)
        return jobs_pb2.DeleteJobResponse()


    @_rpc
    def GetFrameImage(self, request: jobs_pb2.GetFrameImageRequest, context: grpc.ServicerContext, caller: Caller):
        """One analysed frame's image (JPEG), with its detections drawn if asked."""
        return wire.frame_image_to_pb(self._frames.frame_image(caller, request.job_id, request.frame_index,
                                                               request.annotated))

    @_rpc
    def GetContactSheet(self, request: jobs_pb2.GetContactSheetRequest, context: grpc.ServicerContext,
                        caller: Caller):
        """A PNG grid of annotated frames spread over the job."""
        layout = SheetLayout(columns=request.columns, tile_width=request.tile_width, max_frames=request.max_frames)
        return wire.contact_sheet_to_pb(self._frames.contact_sheet(caller, request.job_id, layout))


def _status_filter(value: int) -> JobStatus | None:
    """ListJobs' optional status: unset is None; a number that names no status is INVALID_ARGUMENT."""
    if not value:
        return None
    try:
        return wire.status_from_pb(value)
    except ValueError:
        raise BadRequest(f"status {value} is not a job status",
                         [FieldViolation("status", "not a JobStatus value")]) from None


def _resource(view: JobView) -> JobResource:
    return JobResource.from_job(view.job, view.standing)


def _job_pb(view: JobView) -> jobs_pb2.Job:
    return wire.job_to_pb(_resource(view))


def _job_request(spec: jobs_pb2.JobSpec) -> JobRequest:
    return JobRequest(pipeline_id=spec.pipeline_id, options=wire.options_from_pb(spec.options),
                      request_id=spec.request_id, callback_url=spec.callback_url)


# A refusal sent while the client is still writing can reach it as a bare INTERNAL
# ("Internal error from Core") instead of our status; reading a little more of what is
# in flight first lets the answer arrive intact. Bounded, so refusing stays cheap.
_DRAIN_BYTES = 16 * 1024 * 1024
_DRAIN_SECONDS = 2.0


def _drain(request_iterator: Iterator[jobs_pb2.SubmitRequest]) -> None:
    deadline = time.monotonic() + _DRAIN_SECONDS
    seen = 0
    try:
        for message in request_iterator:
            seen += 1 if isinstance(message, Unparsable) else message.ByteSize()
            if seen > _DRAIN_BYTES or time.monotonic() > deadline:
                return
    except grpc.RpcError:
        return


def _chunks(request_iterator: Iterator[jobs_pb2.SubmitRequest], uploads: UploadLimiter, handle: int) -> Iterator[bytes]:
    for message in request_iterator:
        uploads.touch(handle)
        if isinstance(message, Unparsable):
            raise message.bad_request()
        if message.WhichOneof("payload") != "chunk":
            raise BadRequest("only the first Submit message may carry the job spec")
        yield message.chunk
