"""Request rates per tenant: one tenant calling too fast is slowed down alone, before its calls
reach the database.

Each api process keeps a moving window per tenant in memory (the `limits` package): a tenant may
make up to N calls in any M seconds, on each replica; the N+1st gets ``TooManyRequests`` with the
seconds until its oldest call leaves the window.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse, storage, strategies

from videojobs.common.errors import TooManyRequests
from videojobs.common.tenants import Caller


class TenantRequestRate:
    """``admit(caller)`` counts a call against the caller's tenant, or raises TooManyRequests."""

    def __init__(self, rate: str) -> None:
        """`rate`: "N per M seconds" (the `limits` notation), or empty for no limit."""
        self._rate: RateLimitItem | None = parse(rate) if rate.strip() else None
        self._windows = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def admit(self, caller: Caller) -> None:
        if self._rate is None or self._windows.hit(self._rate, caller.tenant_id):
            return
        reset_at = self._windows.get_window_stats(self._rate, caller.tenant_id).reset_time
        raise TooManyRequests(str(self._rate), math.ceil(max(0.0, reset_at - time.time())))
