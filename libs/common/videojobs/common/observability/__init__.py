"""Logs, traces and metrics of a videojobs process, set up once by its composition root.

``configure(service, settings)`` routes every logger through one JSON (or text)
handler and turns tracing on when an OTLP endpoint is configured. Metrics need no
set-up: each service's ``metrics`` module declares them in the default registry,
served on ``/metrics`` (gateway: its REST port; api and worker: ``VIDEOJOBS_METRICS_PORT``).
"""

from __future__ import annotations

from videojobs.common.config import Settings
from videojobs.common.observability.logs import configure_logging
from videojobs.common.observability.tracing import configure_tracing


def configure(service: str, settings: Settings) -> None:
    """Logging in `settings.log_format` at `settings.log_level`, and tracing if configured."""
    configure_logging(service, settings.log_level, settings.log_format, capture_native=settings.log_format == "json")
    configure_tracing(service)
