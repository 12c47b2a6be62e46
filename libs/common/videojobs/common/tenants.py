"""Tenants and their API keys: how a key is made, stored (never in clear) and checked.

A key reads ``vjk_<prefix>_<secret>``: the prefix (10 lowercase letters and digits)
is public and names the key in listings and logs; the secret is 32 random bytes.
The store keeps the prefix and an HMAC-SHA256 of the whole key under a server-side
pepper (``VIDEOJOBS_API_KEY_PEPPER``). Keys carry 256 bits of entropy, so a fast keyed
hash is enough (a slow password hash protects guessable secrets, not these);
comparison is constant-time.

Each tenant has a webhook signing secret (Standard Webhooks ``whsec_`` form), shown
by ``videojobs keys create`` and used by the api to sign completion notices.
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


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    webhook_secret: str
    created_at: datetime


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
