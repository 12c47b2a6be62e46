"""Readiness: the standard grpc.health.v1 service, fed by real checks of the dependencies."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

# SERVING while the process runs, whatever its dependencies: Kubernetes liveness probes
# ask for it, so a database outage makes pods unready instead of restarting them.
LIVENESS_SERVICE = "liveness"


class ReadinessMonitor:
    """Runs every check periodically; SERVING only while all of them pass."""

    def __init__(
        self,
        checks: dict[str, Callable[[], None]],
        services: list[str],
        interval_seconds: float = 5.0,
    ) -> None:
        self.servicer = health.HealthServicer()
        self._checks = checks
        self._services = ["", *services]
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures: dict[str, str] = {}
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    def check_now(self) -> bool:
        failures: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                check()
            except Exception as exc:  # noqa: BLE001 -- any failure means not ready
                failures[name] = f"{type(exc).__name__}: {exc}"
        if failures != self.failures and failures:
            log.warning("not ready: %s", failures)
        self.failures = failures
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING if failures else health_pb2.HealthCheckResponse.SERVING)
        return not failures

    def start(self) -> None:
        self.check_now()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.servicer.enter_graceful_shutdown()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_now()

    def _set(self, status: int) -> None:
        for service in self._services:
            self.servicer.set(service, status)
