"""VideoJobsClient: a synchronous Python client of the gRPC JobService.

Every answer is one of the contract's types (``JobResource``, ``ResultsDocument``,
``Capabilities``), converted by ``videojobs.common.wire``. Calls that find the
service UNAVAILABLE are retried with capped exponential backoff and full jitter;
a retried upload is sent again from its first byte. The API key (``api_key`` or
``VIDEOJOBS_API_KEY``) travels as ``authorization: Bearer <key>`` metadata.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import grpc

from videojobs.client.config import ClientSettings
from videojobs.client.errors import WaitTimeout, from_rpc_error
from videojobs.common import wire
from videojobs.common.errors import TOO_MANY_REQUESTS
from videojobs.common.frames import MAX_IMAGE_MESSAGE_BYTES, RenderedImage
from videojobs.common.job import JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.common.resources import Capabilities, JobResource
from videojobs.common.serving import KEEPALIVE_CLIENT_OPTIONS
from videojobs.common.results import MAX_PAGE_SIZE, FrameResult, ResultsDocument
from videojobs.common.rpc_errors import remote_problem
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

T = TypeVar("T")

UPLOAD_CHUNK_BYTES = 1024 * 1024
# wait(): called with the job after every poll.
JobCallback = Callable[[JobResource], None]


@dataclass(frozen=True)
class JobsPage:
    """One page of the caller's jobs, newest first; `next_page_token` is empty on the last page."""

    jobs: list[JobResource]
    next_page_token: str


@dataclass(frozen=True)
class RetryPolicy:
    """How calls that find the service UNAVAILABLE, or the tenant over its request rate, are retried (sleeps
    are drawn from 0..backoff, after the Retry-After the service names if it does)."""

    attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    multiplier: float = 2.0

    def backoffs(self) -> Iterator[float]:
        """The upper bounds of the sleeps between attempts."""
        backoff = self.initial_backoff
        for _ in range(max(0, self.attempts - 1)):
            yield backoff
            backoff = min(self.max_backoff, backoff * self.multiplier)


def _version() -> str:
    try:
        return importlib_metadata.version("videojobs")
    except importlib_metadata.PackageNotFoundError:
        return "0"


class VideoJobsClient:
    """Submit videos, follow jobs and fetch their results over gRPC. Use as a context manager, or close()."""

    def __init__(
        self,
        server: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        settings: Optional[ClientSettings] = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`server` (host:port) and `api_key` default to VIDEOJOBS_SERVER and VIDEOJOBS_API_KEY; `timeout`
        bounds each call except uploads."""
        settings = settings or ClientSettings()
        self.server = server or settings.server
        key = api_key if api_key is not None else settings.api_key.get_secret_value()
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {key}"),) if key else ()
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep
        self._channel = grpc.insecure_channel(self.server, options=[
            ("grpc.max_receive_message_length", MAX_IMAGE_MESSAGE_BYTES),
            ("grpc.primary_user_agent", f"videojobs-client/{_version()}"),
            *KEEPALIVE_CLIENT_OPTIONS,
        ])
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)

    def __enter__(self) -> "VideoJobsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- calls ---------------------------------------------------------------------------------------
    def _call(self, rpc: Callable[..., T], request: Callable[[], object], timeout: Optional[float]) -> T:
        """One RPC with retries on UNAVAILABLE, and on the tenant's request rate after the time the service
        names; `request()` builds the request (a fresh stream) per attempt."""
        backoffs = self._retry.backoffs()
        while True:
            try:
                return rpc(request(), timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                pause = self._retry_pause(exc, next(backoffs, None))
                if pause is None:
                    raise from_rpc_error(exc, self.server) from None
                self._sleep(pause)

    @staticmethod
    def _retry_pause(exc: grpc.RpcError, backoff: Optional[float]) -> Optional[float]:
        """How long to wait before the next attempt, or None to give up with the error."""
        if backoff is None:
            return None
        if exc.code() is grpc.StatusCode.UNAVAILABLE:
            return random.uniform(0, backoff)
        if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
            remote = remote_problem(exc)
            if remote is not None and remote.problem is TOO_MANY_REQUESTS:
                return float(remote.extensions.get("retry_after_seconds", 1)) + random.uniform(0, backoff)
        return None

    # -- submit --------------------------------------------------------------------------------------
    def submit_file(self, path: Path | str, pipeline_id: str = "", options: Optional[AnalysisOptions] = None, *,
                    request_id: Optional[str] = None, callback_url: str = "") -> JobResource:
        """Upload a local video and create a job; its resource (PENDING) comes back at once.

        Every submit carries an idempotency key (`request_id`, a fresh UUID unless given): an
        upload retried after UNAVAILABLE, or a second call with the same key, returns the first
        job instead of creating another."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        spec = self._spec(pipeline_id, options, path.name, request_id, callback_url)

        def messages() -> Iterator[jobs_pb2.SubmitRequest]:
            yield jobs_pb2.SubmitRequest(spec=spec)
            with path.open("rb") as f:
                while chunk := f.read(UPLOAD_CHUNK_BYTES):
                    yield jobs_pb2.SubmitRequest(chunk=chunk)

        reply = self._call(self._stub.Submit, messages, None)
        return self.status(reply.job_id)

    def submit_from_storage(self, input_key: str, pipeline_id: str = "", options: Optional[AnalysisOptions] = None,
                            *, request_id: Optional[str] = None, callback_url: str = "") -> JobResource:
        """Create a job for a video already in the caller's upload area of the service's storage."""
        spec = self._spec(pipeline_id, options, "", request_id, callback_url)
        request = jobs_pb2.SubmitFromStorageRequest(spec=spec, input_key=input_key)
        reply = self._call(self._stub.SubmitFromStorage, lambda: request, self._timeout)
        return self.status(reply.job_id)

    @staticmethod
    def _spec(pipeline_id: str, options: Optional[AnalysisOptions], filename: str, request_id: Optional[str],
              callback_url: str) -> jobs_pb2.JobSpec:
        return jobs_pb2.JobSpec(pipeline_id=pipeline_id, options=wire.options_to_pb(options or AnalysisOptions()),
                                filename=filename, request_id=request_id or str(uuid.uuid4()),
                                callback_url=callback_url)

    # -- follow --------------------------------------------------------------------------------------
    def status(self, job_id: str) -> JobResource:
        """Where a job stands: status, frames done of total, error message if it failed."""
        request = jobs_pb2.GetStatusRequest(job_id=job_id)
        return wire.job_from_pb(self._call(self._stub.GetStatus, lambda: request, self._timeout).job)

    def wait(self, job_id: str, timeout: Optional[float] = None, poll_interval: float = 0.5,
             on_progress: Optional[JobCallback] = None) -> JobResource:
        """Poll until the job is COMPLETED or FAILED and return it; WaitTimeout after `timeout` seconds."""
        started = time.monotonic()
        while True:
            job = self.status(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.status.is_final:
                return job
            elapsed = time.monotonic() - started
            if timeout is not None and elapsed >= timeout:
                raise WaitTimeout(job, timeout)
            pause = poll_interval if timeout is None else min(poll_interval, timeout - elapsed)
            self._sleep(max(0.0, pause))

    # -- list / cancel / delete --------------------------------------------------------------------------
    def list_page(self, status: Optional[JobStatus] = None, page_size: int = 0, page_token: str = "") -> JobsPage:
        """One page of the caller's jobs, newest first, optionally only those in `status`."""
        request = jobs_pb2.ListJobsRequest(page_size=page_size, page_token=page_token,
                                           status=wire.status_to_pb(status) if status else 0)
        reply = self._call(self._stub.ListJobs, lambda: request, self._timeout)
        return JobsPage([wire.job_from_pb(job) for job in reply.jobs], reply.next_page_token)

    def jobs(self, status: Optional[JobStatus] = None, page_size: int = 0) -> Iterator[JobResource]:
        """Every job of the caller, newest first, fetched a page at a time."""
        token = ""
        while True:
            page = self.list_page(status, page_size, token)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id: str) -> JobResource:
        """Cancel a PENDING or RUNNING job (CANCELLED comes back); a final job is a ServiceError (409)."""
        request = jobs_pb2.CancelJobRequest(job_id=job_id)
        return wire.job_from_pb(self._call(self._stub.CancelJob, lambda: request, self._timeout).job)

    def delete(self, job_id: str) -> None:
        """Cancel the job if needed, then remove it with its input, results and frame images."""
        request = jobs_pb2.DeleteJobRequest(job_id=job_id)
        self._call(self._stub.DeleteJob, lambda: request, self._timeout)

    # -- results -------------------------------------------------------------------------------------
    def result_pages(self, job_id: str, page_size: int = MAX_PAGE_SIZE) -> Iterator[ResultsDocument]:
        """The results document page by page (each page's `results` holds that page's frames)."""
        token = ""
        while True:
            request = jobs_pb2.GetResultsRequest(job_id=job_id, page_size=page_size, page_token=token)
            page = self._call(self._stub.GetResults, lambda: request, self._timeout)
            yield wire.results_page_from_pb(page)
            token = page.next_page_token
            if not token:
                return

    def frames(self, job_id: str, page_size: int = MAX_PAGE_SIZE) -> Iterator[FrameResult]:
        """Every analysed frame, in order, fetched a page at a time."""
        for page in self.result_pages(job_id, page_size):
            yield from page.results

    def results(self, job_id: str) -> ResultsDocument:
        """A COMPLETED job's whole results document (all pages)."""
        pages = self.result_pages(job_id)
        first = next(pages)
        frames = list(first.results)
        for page in pages:
            frames.extend(page.results)
        return first.model_copy(update={"results": frames})

    def capabilities(self) -> Capabilities:
        """Pipelines, detector classes, OCR languages, limits and accepted formats."""
        request = jobs_pb2.GetCapabilitiesRequest()
        return wire.capabilities_from_pb(self._call(self._stub.GetCapabilities, lambda: request, self._timeout))

    # -- images --------------------------------------------------------------------------------------
    def frame_image(self, job_id: str, frame_index: int, annotated: bool = False) -> RenderedImage:
        """One analysed frame as the worker kept it (JPEG), with its detections drawn if `annotated`."""
        request = jobs_pb2.GetFrameImageRequest(job_id=job_id, frame_index=frame_index, annotated=annotated)
        return wire.image_from_pb(self._call(self._stub.GetFrameImage, lambda: request, self._timeout))

    def contact_sheet(self, job_id: str, columns: int = 0, tile_width: int = 0,
                      max_frames: int = 0) -> RenderedImage:
        """A PNG grid of annotated frames spread over the job (0 = the service's defaults)."""
        request = jobs_pb2.GetContactSheetRequest(job_id=job_id, columns=columns, tile_width=tile_width,
                                                  max_frames=max_frames)
        return wire.image_from_pb(self._call(self._stub.GetContactSheet, lambda: request, self._timeout * 4))
