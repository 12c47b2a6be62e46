"""Prometheus metrics shared by the services: the exposition server and the metrics more than one service records.

Each service declares its own metrics in its ``metrics`` module, all in the default
registry with the ``videojobs_`` prefix, base units and bounded label sets (pipelines,
statuses, stages, problem slugs, route templates, RPC names; never a job id).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from videojobs.common.errors import VideoJobsError
from videojobs.common.serving import PortInUse

# Request latencies (seconds): sub-millisecond reads to slow uploads.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Job-level durations (seconds): a short clip on a fast worker to a long video behind a backlog.
JOB_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)

UPLOAD_REFUSALS = Counter(
    "videojobs_upload_refusals_total",
    "Uploads refused, by problem slug (counted by the process that refused: gateway or api).",
    ["reason"],
)

CLOCK_OFFSET = Gauge(
    "videojobs_clock_offset_seconds",
    "The database server's clock minus this host's, as last measured: the correction the service's times carry "
    "(clock.DatabaseClock). Far from 0, the host's time synchronisation is broken.",
)


@contextlib.contextmanager
def refusals_counted() -> Iterator[None]:
    """Count a domain error raised inside as an upload refusal (by its problem), then let it through."""
    try:
        yield
    except VideoJobsError as exc:
        UPLOAD_REFUSALS.labels(exc.problem.slug).inc()
        raise


@contextlib.contextmanager
def timed(histogram: Histogram) -> Iterator[None]:
    """Observe the seconds the block took (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - start)


class MetricsServer:
    """`/metrics` over HTTP on its own port (api, worker); the gateway serves it on its REST port."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.requested_port = port
        self.port = 0
        self._server = None
        self._thread = None

    def start(self) -> int:
        try:
            self._server, self._thread = start_http_server(self.requested_port, addr=self.host, registry=REGISTRY)
        except OSError as exc:
            raise PortInUse("Prometheus metrics", self.host, self.requested_port, exc.strerror or str(exc)) from None
        self.port = self._server.server_port
        return self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
