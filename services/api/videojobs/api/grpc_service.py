"""The gRPC edge: JobService RPCs mapped onto the JobsService use cases."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Iterator

import grpc

from videojobs.api.service import JobRequest, JobsService
from videojobs.common import wire
from videojobs.common.errors import (
    IllegalTransition,
    InvalidJobId,
    InvalidOptions,
    InvalidUpload,
    JobNotFound,
    ResultsNotReady,
    StorageObjectNotFound,
    TemporaryFault,
    UploadTooLarge,
)
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

log = logging.getLogger(__name__)

# Most specific first: UploadTooLarge is an InvalidUpload.
_ERROR_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (UploadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidJobId, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidOptions, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidUpload, grpc.StatusCode.INVALID_ARGUMENT),
    (JobNotFound, grpc.StatusCode.NOT_FOUND),
    (StorageObjectNotFound, grpc.StatusCode.NOT_FOUND),
    (ResultsNotReady, grpc.StatusCode.FAILED_PRECONDITION),
    (IllegalTransition, grpc.StatusCode.FAILED_PRECONDITION),
    (TemporaryFault, grpc.StatusCode.UNAVAILABLE),
]


def status_code_for(exc: Exception) -> grpc.StatusCode:
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Domain errors become a gRPC status with a readable message; anything else is INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: "JobServiceServicer", request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001
            code = status_code_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__name__)
                context.abort(code, f"internal error: {type(exc).__name__}")
            context.abort(code, str(exc))

    return wrapper


class JobServiceServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, jobs: JobsService) -> None:
        self._jobs = jobs

    @_rpc
    def Submit(self, request_iterator: Iterator[jobs_pb2.SubmitRequest], context: grpc.ServicerContext):
        """Upload stream: a JobSpec first, then the video bytes in order."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "spec":
            raise InvalidOptions("the first Submit message must carry the job spec")
        job = self._jobs.submit_upload(_job_request(first.spec), _chunks(request_iterator))
        return jobs_pb2.SubmitResponse(job_id=job.job_id, status=wire.status_to_pb(job.status))

    @_rpc
    def SubmitFromStorage(self, request: jobs_pb2.SubmitFromStorageRequest, context: grpc.ServicerContext):
        """A job for a video already in object storage."""
        job = self._jobs.submit_from_storage(_job_request(request.spec), request.input_key)
        return jobs_pb2.SubmitFromStorageResponse(job_id=job.job_id, status=wire.status_to_pb(job.status))

    @_rpc
    def GetStatus(self, request: jobs_pb2.GetStatusRequest, context: grpc.ServicerContext):
        """A job's status and progress."""
        return wire.status_response(self._jobs.get_status(request.job_id))

    @_rpc
    def GetResults(self, request: jobs_pb2.GetResultsRequest, context: grpc.ServicerContext):
        """One page of a COMPLETED job's frames, with the video metadata and provenance."""
        page = self._jobs.get_results(request.job_id, request.page_size, request.page_token)
        return wire.results_response(page.job, page.document, page.frames, page.next_page_token)


def _job_request(spec: jobs_pb2.JobSpec) -> JobRequest:
    options = wire.options_from_pb(spec.options) if spec.HasField("options") else {}
    return JobRequest(pipeline_id=spec.pipeline_id, options=options)


def _chunks(request_iterator: Iterator[jobs_pb2.SubmitRequest]) -> Iterator[bytes]:
    for message in request_iterator:
        if message.WhichOneof("payload") != "chunk":
            raise InvalidOptions("only the first Submit message may carry the job spec")
        yield message.chunk
