"""Each tenant's limits in force: its own (``videojobs tenants set``) where it has them, else the service's.

The tenant store is asked at most once per ``cache_seconds`` for a tenant, so a change reaches every api
process within that time, and a tenant's calls cost no database read each. If the store cannot be reached,
the last limits read for the tenant stay in force (the service's defaults for a tenant never read): the
request-rate gate keeps working through a database outage, as it does without tenants' own limits.
"""

from __future__ import annotations

import logging

from videojobs.api.caching import ReadThroughCache
from videojobs.common.config import Settings
from videojobs.common.observability import logs
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.tenants import TenantLimits

log = logging.getLogger(__name__)

LIMITS_CACHE_SECONDS = 2.0  # as long as the authenticator keeps a key


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
        self._limits: ReadThroughCache[TenantLimits] = ReadThroughCache(cache_seconds)
        self._unreachable_warning = logs.Throttle()  # once a minute while the store cannot be reached

    @classmethod
    def uniform(cls, request_rate: str = "", max_active_jobs: int = 0) -> "TenantQuotas":
        """The same limits for every tenant, with no tenant store (benchmarks, tests)."""
        return cls(None, TenantLimits(max_active_jobs, request_rate))

    def of(self, tenant_id: str) -> TenantLimits:
        if self._store is None:
            return self.defaults
        store = self._store

        def read() -> TenantLimits:
            tenant = store.get_tenant(tenant_id)
            return tenant.limits.over(self.defaults) if tenant is not None else self.defaults

        try:
            return self._limits.get(tenant_id, read)
        except Exception as exc:  # noqa: BLE001 - the database is down or slow: the limits last read hold
            if self._unreachable_warning.due():
                log.warning("tenant limits: the tenant store cannot be reached (%s); the limits last read stay "
                            "in force meanwhile", exc)
            return self._limits.last(tenant_id) or self.defaults
