"""Tracing with OpenTelemetry, on only when an OTLP endpoint is configured.

The standard variables decide: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns tracing on and says where spans go,
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``http/protobuf`` (default) or ``grpc``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_SDK_DISABLED`` mean what they mean everywhere. Without an endpoint nothing
is installed: ``span`` hands back a shared no-op context, ``inject`` an empty
carrier, and no interceptor or middleware is added.

Trace context travels as W3C ``traceparent``/``tracestate``: REST request ->
gRPC metadata (instrumentation) -> the outbox row -> the queue message headers ->
the worker's spans.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

_NO_SPAN = contextlib.nullcontext()
_enabled = False
_provider: Any = None

# Instrumentation spans of these paths say nothing an operator needs.
EXCLUDED_URLS = "healthz,readyz,metrics"


def endpoint_configured(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing(service: str, exporter: Any = None) -> bool:
    """Install the SDK when an OTLP endpoint is configured (or a span `exporter` is given, as tests do).

    Returns whether tracing is on. Calling it again adds the new exporter to the same provider.
    """
    global _enabled, _provider
    if exporter is None and not endpoint_configured():
        return _enabled
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if _provider is None:
        name = os.environ.get("OTEL_SERVICE_NAME") or f"videojobs-{service}"
        _provider = TracerProvider(resource=Resource.create({"service.name": name}))
        trace.set_tracer_provider(_provider)
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        _provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    _enabled = True
    return True


def _otlp_exporter() -> Any:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def shutdown_tracing() -> None:
    """Flush spans still buffered (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def enabled() -> bool:
    return _enabled


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def span(tracer_: trace.Tracer, name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any):
    """A span around a block, current inside it; the shared no-op context when tracing is off."""
    if not _enabled:
        return _NO_SPAN
    return tracer_.start_as_current_span(name, kind=kind, attributes=attributes or None)


def start_span(tracer_: trace.Tracer, name: str, **attributes: Any) -> Any:
    """A span started now, a child of the current one but never current itself (for work that
    interleaves with other spans); end it with ``end_span``. None when tracing is off."""
    if not _enabled:
        return None
    return tracer_.start_span(name, attributes=attributes or None)


def end_span(span_: Any) -> None:
    if span_ is not None:
        span_.end()


def inject() -> dict[str, str]:
    """The current trace context as W3C headers (empty when tracing is off or there is no span)."""
    if not _enabled:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def continued(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace context of `carrier` (headers from a message or a stored row) current."""
    if not _enabled or not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


# -- instrumentation of the entrances (only when tracing is on) ---------------------------
def grpc_server_interceptors() -> list[Any]:
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import server_interceptor

    return [server_interceptor()]


def traced_channel(channel: Any) -> Any:
    """A synchronous gRPC channel with client spans (itself when tracing is off)."""
    if not _enabled:
        return channel
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    return intercept_channel(channel, client_interceptor())


def grpc_aio_client_interceptors() -> list[Any]:
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())


def instrument_fastapi(app: Any) -> None:
    """Server spans for every REST request, continuing a `traceparent` the client sent."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS)
    build_instrumented = app.build_middleware_stack  # the instrumentation's middleware is the outermost...
    app.build_middleware_stack = lambda: _FreshContext(build_instrumented())  # ...and this goes around it


class _FreshContext:
    """Each HTTP request starts from an empty trace context.

    Under uvicorn a keep-alive connection's later requests inherited the span of its
    first one (they all ended up in one trace); starting each request from an empty
    context keeps one trace per request. A client's `traceparent` header still wins:
    the instrumentation extracts it inside.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        token = otel_context.attach(otel_context.Context())
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


def mark_error(description: str) -> None:
    """Mark the current span as failed (the job's outcome), when tracing is on."""
    if _enabled:
        from opentelemetry.trace import Status, StatusCode

        trace.get_current_span().set_status(Status(StatusCode.ERROR, description[:200]))


def disable() -> None:
    """Stop tracing from here on (new spans are no-ops, new servers get no instrumentation)."""
    global _enabled
    _enabled = False


def resume() -> None:
    """Trace again after ``disable`` (only if ``configure_tracing`` installed the SDK before)."""
    global _enabled
    _enabled = _provider is not None
