"""Request rates per tenant: one tenant calling too fast is slowed down alone.

Each tenant's rate is its own (``videojobs tenants set --request-rate``) or the service's
``VIDEOJOBS_TENANT_REQUEST_RATE``, as ``TenantQuotas`` says. Two gates, both from the `limits` package,
with the same "N per M seconds":

* in each api process, a moving window per tenant in memory: a tenant's calls beyond N in any M
  seconds on this process are refused before they reach the database;
* with a database the api processes share (Postgres), a sliding window counter per tenant in it
  (``SqlRateCounters``): the tenant's calls over all processes stay within N per M seconds, however
  many replicas there are and however the calls spread over them. The count of the previous window
  weighs by how much of it the sliding window still covers (``limits``' sliding window counter).

The call over either gets ``TooManyRequests`` with the seconds until that gate admits one again. If
the shared counters cannot be reached, the process's own gate goes on alone (logged): the calls that
need the database fail by themselves then.
"""

from __future__ import annotations

import functools
import logging
import math
import time

from limits import RateLimitItem, parse, storage, strategies

from videojobs.api.metrics import RATE_REFUSALS, RATE_SHARED_UNREACHABLE
from videojobs.api.quotas import TenantQuotas
from videojobs.common.errors import TooManyRequests
from videojobs.common.observability import logs
from videojobs.common.tenants import Caller

log = logging.getLogger(__name__)



class TenantRequestRate:
    """``admit(caller)`` counts a call against the caller's tenant, or raises TooManyRequests."""

    def __init__(self, quotas: TenantQuotas, shared: storage.Storage | None = None) -> None:
        """`quotas`: each tenant's rate, "N per M seconds" (the `limits` notation) or empty for no limit.
        `shared`: counters every api process uses (None: this process's own gate only)."""
        self._quotas = quotas
        self._local = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._shared = strategies.SlidingWindowCounterRateLimiter(shared) if shared is not None else None
        self._unreachable_warning = logs.Throttle()  # once a minute while the shared counters cannot be reached

    @property
    def shared(self) -> bool:
        """Whether the tenants' windows are counted over every api process."""
        return self._shared is not None

    def admit(self, caller: Caller) -> None:
        rate = _parsed(self._quotas.of(caller.tenant_id).request_rate or "")
        if rate is None:
            return
        self._check(self._local, rate, caller, "process")
        if self._shared is not None:
            try:
                self._check(self._shared, rate, caller, "shared")
            except TooManyRequests:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is down or slow: this process's gate holds
                self._unreachable(exc)

    @staticmethod
    def _check(limiter: strategies.RateLimiter, rate: RateLimitItem, caller: Caller, gate: str) -> None:
        # The window's key holds the rate as well as the tenant: a tenant whose rate changes starts a new window.
        if limiter.hit(rate, caller.tenant_id):
            return
        RATE_REFUSALS.labels(gate).inc()
        reset_at = limiter.get_window_stats(rate, caller.tenant_id).reset_time
        raise TooManyRequests(str(rate), max(1, math.ceil(reset_at - time.time())))

    def _unreachable(self, exc: Exception) -> None:
        RATE_SHARED_UNREACHABLE.inc()
        if self._unreachable_warning.due():
            log.warning("request rates: the shared counters cannot be reached (%s); each api process limits "
                        "its tenants on its own meanwhile", exc)


@functools.lru_cache(maxsize=1024)
def _parsed(rate: str) -> RateLimitItem | None:
    return parse(rate) if rate else None
