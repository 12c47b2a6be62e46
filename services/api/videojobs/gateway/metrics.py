"""The gateway's request metrics and access log: one ASGI middleware for both.

Requests are labelled by route template (``/video/status/{job_id}``), never by the
raw path, so a label set stays bounded whatever clients send; paths no route
matches share one label. The access log line keeps the raw path (no query
string: it may carry tokens) for the logs only.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from videojobs.common.observability.metrics import REQUEST_BUCKETS

access_log = logging.getLogger("videojobs.gateway.access")

HTTP_REQUESTS = Counter(
    "videojobs_http_requests_total", "REST requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "videojobs_http_request_duration_seconds", "Seconds to answer a REST request, by method and route template.",
    ["method", "route"], buckets=REQUEST_BUCKETS,
)
PROTOCOL_REFUSALS = Counter(
    "videojobs_http_protocol_refusals_total",
    "REST requests answered before the app saw them, by problem type (reason): bad-request (not valid HTTP), "
    "request-timeout (the request line and headers did not arrive in time; the connection is closed).",
    ["reason"],
)
STALLED_READERS = Counter(
    "videojobs_http_stalled_readers_total",
    "REST connections aborted because the client took none of an answer for the send timeout.",
)
UNMATCHED_ROUTE = "<unmatched>"
# Probes and scrapes are counted but not written to the access log (one line every few seconds each).
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class RequestMetrics:
    """Pure ASGI middleware: counts and times each HTTP request by route template, and logs it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes every handler ends as a 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(method, route).observe(seconds)
            if route not in QUIET_ROUTES:
                client = scope.get("client")
                access_log.info(
                    '%s %s %d %.1f ms', method, scope.get("path", ""), status, seconds * 1000,
                    extra={"http_method": method, "http_route": route, "http_path": scope.get("path", ""),
                           "http_status": status, "duration_seconds": round(seconds, 6),
                           "client": client[0] if client else None},
                )


async def metrics_endpoint(_request: Request) -> Response:
    """Prometheus exposition of this process's registry."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
