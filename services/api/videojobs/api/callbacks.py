"""Callback URLs: what a job's completion notice may be sent to (a guard against SSRF).

A callback URL is http(s), without credentials, and its host resolves only to
public addresses. Loopback and private networks are allowed with
VIDEOJOBS_WEBHOOK_ALLOW_PRIVATE=1 (tests, trusted networks); link-local addresses
(169.254.0.0/16 and fe80::/10, where cloud metadata services answer), multicast,
unspecified and reserved addresses never are. The check runs at submit and again
at each delivery, which connects to the address it checked (no second look-up a
DNS answer could change in between).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from videojobs.common.errors import InvalidCallbackUrl

MAX_URL_LENGTH = 2048


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return "is link-local"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "is not a unicast address"
    if address.is_loopback:
        return None if allow_private else "is loopback"
    if address.is_private or not address.is_global:
        return None if allow_private else "is on a private network"
    return None


def parse_callback_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable-looking URL, or InvalidCallbackUrl."""
    if len(url) > MAX_URL_LENGTH or any(ord(c) <= 32 for c in url):
        raise InvalidCallbackUrl(f"must be at most {MAX_URL_LENGTH} characters without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidCallbackUrl("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidCallbackUrl("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidCallbackUrl("may not carry credentials")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def resolve_allowed(host: str, port: int, allow_private: bool) -> str:
    """The first address of `host` once every address it resolves to is allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise InvalidCallbackUrl("has a host that does not resolve") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        reason = _refusal(address, allow_private)
        if reason:
            raise InvalidCallbackUrl(f"resolves to an address that {reason}")
    return str(addresses[0])


def check_callback_url(url: str, allow_private: bool) -> None:
    """Raise InvalidCallbackUrl unless a notice may be sent to `url`."""
    _, host, port = parse_callback_url(url)
    resolve_allowed(host, port, allow_private)
