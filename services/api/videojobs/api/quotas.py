"""Each tenant's limits in force: its own (``videojobs tenants set``) where it has them, else the service's.

The tenant store is asked at most once per ``cache_seconds`` for a tenant, so a change reaches every api
process within that time, and a tenant's calls cost no database read each. If the store cannot be reached,
the last limits read for the tenant stay in force (the service's defaults for a tenant never read): the
request-rate gate keeps working through a database outage, as it does without tenants' own limits.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from videojobs.common.config import Settings
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.tenants import TenantLimits

log = logging.getLogger(__name__)

LIMITS_CACHE_SECONDS = 2.0  # as long as the authenticator keeps a key
_CACHE_ENTRIES_MAX = 10_000
_UNREACHABLE_LOG_SECONDS = 60.0


def service_defaults(settings: Settings) -> TenantLimits:
    """The limits of a tenant with none of its own."""
    return TenantLimits(settings.max_active_jobs_per_tenant, settings.tenant_request_rate)


class TenantQuotas:
    """``of(tenant_id)``: the tenant's limits with the service's defaults filled in (no None field)."""

    def __init__(self, store: TenantStore | None, defaults: TenantLimits,
                 cache_seconds: float = LIMITS_CACHE_SECONDS) -> None:
        if defaults.max_active_jobs is None or defaults.request_rate is None:
            raise ValueError("the service's default limits must both be set")
        self._store = store
        self.defaults = defaults
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, TenantLimits]] = {}
        self._lock = threading.Lock()
        self._warned_at = -math.inf

    @classmethod
    def uniform(cls, request_rate: str = "", max_active_jobs: int = 0) -> "TenantQuotas":
        """The same limits for every tenant, with no tenant store (benchmarks, tests)."""
        return cls(None, TenantLimits(max_active_jobs, request_rate))

    def of(self, tenant_id: str) -> TenantLimits:
        if self._store is None:
            return self.defaults
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(tenant_id)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            tenant = self._store.get_tenant(tenant_id)
        except Exception as exc:  # noqa: BLE001 - the database is down or slow: the limits last read hold
            self._unreachable(exc)
            return cached[1] if cached is not None else self.defaults
        limits = tenant.limits.over(self.defaults) if tenant is not None else self.defaults
        with self._lock:
            if len(self._cache) >= _CACHE_ENTRIES_MAX:
                self._cache.clear()
            self._cache[tenant_id] = (now, limits)
        return limits

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _UNREACHABLE_LOG_SECONDS:
            self._warned_at = now
            log.warning("tenant limits: the tenant store cannot be reached (%s); the limits last read stay in "
                        "force meanwhile", exc)
