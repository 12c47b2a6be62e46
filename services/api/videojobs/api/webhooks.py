"""Completion notices: the api drains the webhook outbox and POSTs signed events to callback URLs.

Each final state of a job with a ``callback_url`` was written to the outbox in the
same transaction as the state itself, so an api restart loses none. Deliveries are
signed as Standard Webhooks says (``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` = ``v1,`` base64 HMAC-SHA256 of ``id.timestamp.body`` under the
tenant's secret), sent to the address the SSRF guard checked, retried with
exponential backoff on 5xx, 408, 429, timeouts and connection errors for about an
hour, and given up with the attempts and the last error recorded. Several api
replicas may run a dispatcher: each attempt is claimed with a compare-and-set.

A receiver is any public host a tenant names, so it is not trusted to behave: each
attempt has one deadline for connecting, sending and the answer's status line and
headers (a receiver dribbling bytes cannot hold it longer), and the answer's body is
never read (one sending gigabytes costs nothing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import certifi
import httpx
from standardwebhooks.webhooks import Webhook

from videojobs.api.callbacks import parse_callback_url, resolve_allowed
from videojobs.common.errors import InvalidCallbackUrl, TemporaryFault
from videojobs.common.job import utcnow
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.ports.webhooks import Delivery, WebhookOutbox

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = timedelta(minutes=15)
_RETRY_STATUSES = {408, 429}


@dataclass(frozen=True)
class WebhookPolicy:
    allow_private: bool = False
    timeout_seconds: float = 10.0
    retry_base_seconds: float = 5.0
    give_up_after_seconds: float = 3600.0
    public_url: str = ""

    def retry_delay(self, attempts: int) -> timedelta:
        return min(MAX_RETRY_DELAY, timedelta(seconds=self.retry_base_seconds * 2 ** max(0, attempts - 1)))


class WebhookDispatcher:
    def __init__(self, outbox: WebhookOutbox, tenants: TenantStore, policy: WebhookPolicy,
                 interval_seconds: float = 1.0, parallel: int = 4, batch: int = 16,
                 tls: ssl.SSLContext | None = None) -> None:
        self._outbox = outbox
        self._tenants = tenants
        self._policy = policy
        self._interval = interval_seconds
        self._batch = batch
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="webhook")
        # The CAs httpx trusts by default, loaded once rather than for every delivery.
        self._tls = tls or ssl.create_default_context(cafile=certifi.where())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ------------------------------------------------------------------------------
    def dispatch_once(self) -> int:
        """Claim what is due and send it; returns how many attempts were made."""
        now = utcnow()
        hold = now + timedelta(seconds=self._policy.timeout_seconds + 30)
        try:
            due = self._outbox.claim_due(now, self._batch, hold)
        except TemporaryFault as exc:
            log.warning("webhooks: cannot read the outbox: %s", exc)
            return 0
        for future in [self._pool.submit(self._attempt, d) for d in due]:
            future.result()
        return len(due)

    def _attempt(self, delivery: Delivery) -> None:
        try:
            outcome = self._send(delivery)
        except Exception as exc:  # noqa: BLE001 -- recorded as the attempt's error, never lost
            log.exception("webhook %s: unexpected error", delivery.delivery_id)
            outcome = (True, f"internal error: {type(exc).__name__}")
        retry, error = outcome
        now = utcnow()
        try:
            if error is None:
                self._outbox.delivered(delivery.delivery_id, now)
                log.info("webhook %s (job %s): delivered on attempt %d", delivery.delivery_id, delivery.job_id,
                         delivery.attempts)
                return
            next_at = now + self._policy.retry_delay(delivery.attempts)
            if retry and next_at <= delivery.created_at + timedelta(seconds=self._policy.give_up_after_seconds):
                self._outbox.retry_at(delivery.delivery_id, next_at, error)
                log.info("webhook %s (job %s): attempt %d failed (%s); next at %s", delivery.delivery_id,
                         delivery.job_id, delivery.attempts, error, next_at.isoformat(timespec="seconds"))
            else:
                self._outbox.give_up(delivery.delivery_id, now, error)
                log.warning("webhook %s (job %s): given up after %d attempt(s): %s", delivery.delivery_id,
                            delivery.job_id, delivery.attempts, error)
        except TemporaryFault as exc:  # the claim runs out and the attempt is made again
            log.warning("webhook %s: outcome not recorded: %s", delivery.delivery_id, exc)

    def _send(self, delivery: Delivery) -> tuple[bool, str | None]:
        """(worth retrying, error or None)."""
        tenant = self._tenants.get_tenant(delivery.tenant_id)
        if tenant is None:
            return False, "the tenant no longer exists"
        try:
            scheme, host, port = parse_callback_url(delivery.url)
            address = resolve_allowed(host, port, self._policy.allow_private)
        except InvalidCallbackUrl as exc:
            return False, exc.public_detail
        body = json.dumps(self._event(delivery), separators=(",", ":"))
        sent_at = utcnow()
        headers = {
            "content-type": "application/json",
            "user-agent": "videojobs-webhooks/1",
            "webhook-id": delivery.delivery_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": Webhook(tenant.webhook_secret).sign(delivery.delivery_id, sent_at, body),
        }
        parts = urlsplit(delivery.url)
        headers["host"] = parts.netloc
        pinned = f"[{address}]" if ":" in address else address
        target = urlunsplit((scheme, f"{pinned}:{port}", parts.path or "/", parts.query, ""))
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        try:
            status = asyncio.run(self._post(target, body.encode(), headers, extensions))
        except (httpx.TimeoutException, TimeoutError):
            return True, "timed out"
        except httpx.HTTPError as exc:
            return True, f"connection failed ({type(exc).__name__})"
        if 200 <= status < 300:
            return False, None
        retry = status >= 500 or status in _RETRY_STATUSES
        return retry, f"HTTP {status}"

    async def _post(self, url: str, body: bytes, headers: dict[str, str], extensions: dict) -> int:
        """The status a POST is answered with, within the policy's timeout from the first byte to the last
        header; the body of the answer is left unread (the connection is closed with it)."""
        async with asyncio.timeout(self._policy.timeout_seconds), httpx.AsyncClient(
                timeout=self._policy.timeout_seconds, follow_redirects=False, trust_env=False,
                verify=self._tls) as client:
            async with client.stream("POST", url, content=body, headers=headers, extensions=extensions) as answer:
                return answer.status_code

    def _event(self, delivery: Delivery) -> dict:
        event = json.loads(json.dumps(delivery.event))
        base = self._policy.public_url.rstrip("/")
        if base:
            for name in ("status_url", "results_url"):
                if event["data"].get(name):
                    event["data"][name] = base + event["data"][name]
        return event

    # -- background loop ---------------------------------------------------------------------------
    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=self._policy.timeout_seconds + 5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.dispatch_once() and not self._stop.is_set():
                    pass
            except Exception:  # noqa: BLE001 -- the dispatcher must outlive any one bad pass
                log.exception("webhook dispatch pass failed")
            self._wake.wait(self._interval)
            self._wake.clear()


