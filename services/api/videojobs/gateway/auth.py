"""The caller's API key, forwarded to the api as gRPC `authorization` metadata (the api checks it;
the gateway holds no credentials).

Clients send `Authorization: Bearer KEY`. A browser cannot put that header on a page
load or an <img> request, so the read-only routes the viewer uses (the page, frame
images, contact sheets, status and results) also take the key from the
`videojobs_key` cookie (SameSite=Strict, set by the viewer's key form). Routes that
change anything (submit, cancel, delete) take the header only.
"""

from __future__ import annotations

from typing import Optional

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

KEY_COOKIE = "videojobs_key"
# Keys are about 60 characters; anything much longer is not one, and would overflow gRPC's
# metadata limit (8 KiB: RESOURCE_EXHAUSTED in the channel, a 502) instead of reaching the api.
MAX_KEY_CHARS = 512
Metadata = tuple[tuple[str, str], ...]

_bearer = HTTPBearer(auto_error=False, description="An API key from `videojobs keys create`.")


def caller_metadata(credentials: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> Metadata:
    """The key from the Authorization header."""
    return _forwarded(credentials.credentials if credentials else None)


def reader_metadata(request: Request,
                    credentials: Optional[HTTPAuthorizationCredentials] = Depends(_bearer)) -> Metadata:
    """The key from the Authorization header, else from the viewer's cookie (read-only routes)."""
    if credentials:
        return _forwarded(credentials.credentials)
    return _forwarded(request.cookies.get(KEY_COOKIE))


def _forwarded(key: str | None) -> Metadata:
    """The key as gRPC metadata. A value gRPC cannot carry (control or non-ASCII characters) is no key at
    all: forwarding it would fail in the channel (a 5xx) instead of reaching the api (401 where keys are on).
    So is a value longer than any key (MAX_KEY_CHARS)."""
    if not key or len(key) > MAX_KEY_CHARS or not all("!" <= c <= "~" for c in key):
        return ()
    return (("authorization", f"Bearer {key}"),)
