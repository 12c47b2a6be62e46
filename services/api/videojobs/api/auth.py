"""Who is calling: API keys checked against the tenant store (or no check at all when auth is off)."""

from __future__ import annotations

import logging

from videojobs.api.caching import ReadThroughCache
from videojobs.common.errors import Unauthenticated
from videojobs.common.job import DEFAULT_TENANT
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.tenants import ApiKeyRecord, Caller, bearer_token, key_matches, key_prefix

log = logging.getLogger(__name__)

# Key records are cached this long: a revoked key stops working within it (the issue asks for 5 s).
KEY_CACHE_SECONDS = 2.0


class Authenticator:
    """Turns an ``authorization`` value into a Caller, or raises Unauthenticated.

    The key is looked up by its public prefix and compared by keyed hash in
    constant time; the key itself is never logged or echoed.
    """

    def __init__(self, mode: str, store: TenantStore | None, pepper: str = "",
                 cache_seconds: float = KEY_CACHE_SECONDS) -> None:
        if mode not in ("keys", "none"):
            raise ValueError(f"auth mode must be 'keys' or 'none', not {mode!r}")
        if mode == "keys" and store is None:
            raise ValueError("auth mode 'keys' needs a tenant store")
        self.mode = mode
        self._store = store
        self._pepper = pepper
        self._records: ReadThroughCache[ApiKeyRecord | None] = ReadThroughCache(cache_seconds)

    def authenticate(self, authorization: str | None) -> Caller:
        if self.mode == "none":
            return Caller(DEFAULT_TENANT)
        key = bearer_token(authorization)
        prefix = key_prefix(key or "")
        if key is None or prefix is None:
            raise Unauthenticated()
        record = self._record(prefix)
        if record is None or not record.active or not key_matches(key, record, self._pepper):
            raise Unauthenticated()
        return Caller(record.tenant_id, record.prefix)

    def _record(self, prefix: str) -> ApiKeyRecord | None:
        store = self._store
        assert store is not None
        return self._records.get(prefix, lambda: store.find_key(prefix))
