"""Tenants and their API keys: how a key is made, stored (never in clear) and checked.

A key reads ``vjk_<prefix>_<secret>``: the prefix (10 lowercase letters and digits)
is public and names the key in listings and logs; the secret is 32 random bytes.
The store keeps the prefix and an HMAC-SHA256 of the whole key under a server-side
pepper (``VIDEOJOBS_API_KEY_PEPPER``). Keys carry 256 bits of entropy, so a fast keyed
hash is enough (a slow password hash protects guessable secrets, not these);
comparison is constant-time.

Each tenant has a webhook signing secret (Standard Webhooks ``whsec_`` form), shown
by ``videojobs keys create`` and used by the api to sign completion notices, and may have
limits of its own (``videojobs tenants set``) in place of the service's defaults.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

KEY_PREFIX = "vjk_"
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_PREFIX_LENGTH = 10
_KEY_RE = re.compile(r"^vjk_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MAX_ACTIVE_JOBS_BOUND = 1_000_000  # a tenant's own bound on its unfinished jobs, at most
REQUEST_RATE_MAX_CHARS = 64  # the column's width


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's own bounds; None leaves the service's default in place.

    ``max_active_jobs``: PENDING + RUNNING jobs (0: no bound), in place of
    ``VIDEOJOBS_MAX_ACTIVE_JOBS_PER_TENANT``. ``request_rate``: calls as "N per M seconds"
    (empty: no limit), in place of ``VIDEOJOBS_TENANT_REQUEST_RATE``.
    """

    max_active_jobs: int | None = None
    request_rate: str | None = None

    def __post_init__(self) -> None:
        if self.max_active_jobs is not None and not 0 <= self.max_active_jobs <= MAX_ACTIVE_JOBS_BOUND:
            raise ValueError(f"max active jobs is 0 (no bound) to {MAX_ACTIVE_JOBS_BOUND}, not {self.max_active_jobs}")
        if self.request_rate is not None:
            object.__setattr__(self, "request_rate", check_request_rate(self.request_rate))

    def over(self, defaults: "TenantLimits") -> "TenantLimits":
        """These limits, with `defaults`' where the tenant has none of its own."""
        return TenantLimits(
            defaults.max_active_jobs if self.max_active_jobs is None else self.max_active_jobs,
            defaults.request_rate if self.request_rate is None else self.request_rate,
        )


def check_request_rate(value: str) -> str:
    """A request rate as the `limits` package reads it ("200 per 10 seconds", "5/second"), stripped; empty: none.

    ValueError names what is wrong. One rate only: "N per M" and "K per L" together would be two windows."""
    value = value.strip()
    if not value:
        return ""
    if len(value) > REQUEST_RATE_MAX_CHARS:
        raise ValueError(f"a request rate is at most {REQUEST_RATE_MAX_CHARS} characters")
    from limits import parse_many

    try:
        rates = parse_many(value)
    except ValueError:
        rates = []
    if len(rates) != 1 or rates[0].amount < 1:
        raise ValueError(f"a request rate reads like '200 per 10 seconds' or '5/second', not {value!r}")
    return value


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    webhook_secret: str
    created_at: datetime
    limits: TenantLimits = TenantLimits()


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the store keeps of a key: never the key itself."""

    prefix: str
    tenant_id: str
    label: str
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Caller:
    """Who is calling: the tenant every job of the request belongs to."""

    tenant_id: str
    key_prefix: str | None = None  # None when authentication is off


def check_tenant_name(name: str) -> str:
    if not TENANT_RE.match(name or ""):
        raise ValueError(f"tenant names are 1-63 of a-z 0-9 _ . - starting with a letter or digit, not {name!r}")
    return name


def new_key() -> tuple[str, str]:
    """A fresh key and its public prefix."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, or None (then the key cannot be valid)."""
    match = _KEY_RE.match(key or "")
    return match.group(1) if match else None


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_matches(key: str, record: ApiKeyRecord, pepper: str) -> bool:
    return hmac.compare_digest(hash_key(key, pepper), record.key_hash)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def bearer_token(authorization: str | None) -> str | None:
    """The key in an ``authorization`` value (``Bearer KEY``, or the bare key), or None."""
    value = (authorization or "").strip()
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return value if " " not in value else None
