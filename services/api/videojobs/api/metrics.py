"""The api's metrics: submissions, uploads, gRPC requests, and the backlog sampled from the job store and the queue."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import grpc
from prometheus_client import Counter, Gauge, Histogram

from videojobs.common.job import JobStatus, utcnow
from videojobs.common.observability.metrics import REQUEST_BUCKETS
from videojobs.common.ports.jobs import JobRepository
from videojobs.common.ports.queue import QueueService

log = logging.getLogger(__name__)

JOBS_SUBMITTED = Counter("videojobs_jobs_submitted_total", "Jobs accepted (PENDING), by pipeline.", ["pipeline"])
UPLOAD_BYTES = Counter("videojobs_upload_bytes_total", "Bytes of accepted video uploads stored.")

GRPC_HANDLED = Counter(
    "videojobs_grpc_server_handled_total", "gRPC calls finished, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SECONDS = Histogram(
    "videojobs_grpc_server_handling_seconds", "Seconds to handle a gRPC call, by method.",
    ["grpc_service", "grpc_method"], buckets=REQUEST_BUCKETS,
)

RATE_REFUSALS = Counter(
    "videojobs_request_rate_refusals_total",
    "Calls refused for their tenant's request rate, by gate: process (this api's own window) or shared (all api "
    "processes', in the database).", ["gate"],
)
RATE_SHARED_UNREACHABLE = Counter(
    "videojobs_request_rate_shared_unreachable_total",
    "Calls this api process admitted by its own request-rate window alone: the shared counters could not be reached.",
)

QUEUE_DEPTH = Gauge("videojobs_queue_depth", "Messages waiting in the queue (not yet delivered).")
OUTBOX_BACKLOG = Gauge("videojobs_outbox_backlog", "Accepted jobs not yet handed to the queue (outbox rows).")
OUTBOX_OLDEST_AGE = Gauge("videojobs_outbox_oldest_age_seconds", "Age of the oldest outbox row not yet published.")
JOBS_UNFINISHED = Gauge("videojobs_jobs_unfinished", "Jobs not final, by status.", ["status"])
OLDEST_PENDING_AGE = Gauge("videojobs_oldest_pending_job_age_seconds", "Age of the oldest PENDING job.")
LEASE_EXPIRED = Gauge("videojobs_jobs_lease_expired", "RUNNING jobs whose lease ran out (their worker stopped beating).")
SAMPLE_ERRORS = Counter("videojobs_backlog_sample_errors_total", "Backlog samples that failed (database or queue down).")
LAST_SAMPLE = Gauge("videojobs_backlog_last_sample_timestamp_seconds", "When the backlog gauges were last sampled.")


def observe_submitted(pipeline_id: str, upload_bytes: int = 0) -> None:
    JOBS_SUBMITTED.labels(pipeline_id).inc()
    if upload_bytes:
        UPLOAD_BYTES.inc(upload_bytes)


class BacklogSampler:
    """Every `interval` seconds: queue depth, outbox backlog and the unfinished jobs, into gauges.

    Sampled in the background rather than at scrape time, so a slow database never
    makes a scrape time out; a failed sample keeps the previous values and is counted.
    """

    def __init__(self, repo: JobRepository, queue: QueueService, interval_seconds: float = 5.0) -> None:
        self._repo = repo
        self._queue = queue
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        now = utcnow()
        depth = self._queue.size()
        backlog = self._repo.backlog(now)
        QUEUE_DEPTH.set(depth)
        OUTBOX_BACKLOG.set(backlog.outbox_unpublished)
        OUTBOX_OLDEST_AGE.set(_age(backlog.oldest_unpublished_at, now))
        JOBS_UNFINISHED.labels(JobStatus.PENDING.value).set(backlog.pending)
        JOBS_UNFINISHED.labels(JobStatus.RUNNING.value).set(backlog.running)
        OLDEST_PENDING_AGE.set(_age(backlog.oldest_pending_at, now))
        LEASE_EXPIRED.set(backlog.lease_expired)
        LAST_SAMPLE.set(time.time())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="backlog-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 -- a sample must never stop the sampler
                SAMPLE_ERRORS.inc()
                log.warning("backlog metrics not sampled: %s", exc)
            self._stop.wait(self._interval)


def _age(since: Any, now: Any) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


class GrpcMetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every RPC by service, method and final status code."""

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        for kind, factory in _HANDLER_FACTORIES.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                streaming = kind.endswith("_stream")
                return factory(_instrumented(behavior, service, method, streaming),
                               request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler


_HANDLER_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _instrumented(behavior: Callable[..., Any], service: str, method: str, streaming: bool) -> Callable[..., Any]:
    def record(start: float, context: grpc.ServicerContext, failed: bool) -> None:
        code = context.code() if hasattr(context, "code") else None
        name = code.name if isinstance(code, grpc.StatusCode) else ("UNKNOWN" if failed else "OK")
        GRPC_HANDLED.labels(service, method, name).inc()
        GRPC_SECONDS.labels(service, method).observe(time.perf_counter() - start)

    if streaming:
        def stream_behavior(request: Any, context: grpc.ServicerContext) -> Any:
            start, failed = time.perf_counter(), False
            try:
                yield from behavior(request, context)
            except BaseException:
                failed = True
                raise
            finally:
                record(start, context, failed)
        return stream_behavior

    def unary_behavior(request: Any, context: grpc.ServicerContext) -> Any:
        start, failed = time.perf_counter(), False
        try:
            return behavior(request, context)
        except BaseException:
            failed = True
            raise
        finally:
            record(start, context, failed)
    return unary_behavior
