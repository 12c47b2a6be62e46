"""QueueService on NATS JetStream (the production adapter).

Layout on the server: one work-queue stream (``retention=workqueue``, file storage)
bound to one subject, and ONE durable pull consumer shared by every worker process.
A message is the job id; it is published with ``Nats-Msg-Id = job_id`` so the
stream drops duplicates published within its duplicate window, and with the W3C
``traceparent``/``tracestate`` headers of the submit when tracing is on.

Semantics the rest of the service relies on:

* ``dequeue`` fetches one message and keeps it in flight (keyed by job id) until
  ``ack``, ``nak`` or ``term``. ``heartbeat`` sends an in-progress ack, which resets
  the server's AckWait clock.
* ``size()`` is the consumer's ``num_pending``: messages published and not yet
  delivered. Messages in flight or nak'ed and waiting for redelivery are counted
  by the server as ``num_ack_pending`` and are NOT part of ``size()``.
* MaxDeliver = ``max_deliver`` is a safety net, far above what retries use: the
  job store counts attempts (crashes) and temporary faults, not the queue. Once a
  message has been delivered that many times unacked, JetStream stops delivering
  it and publishes a ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES`` advisory;
  ``reclaim_dead`` deletes such messages and hands their job ids to the caller
  (the api republishes or fails the job), and ``purge`` removes messages whose job
  is already final, so no dead message stays in the stream.
* Publishing a dedupe id (default: the job id) that was published within
  ``duplicate_window`` seconds is a no-op even if that message has since been acked
  (the in-memory queue only drops duplicates that are still queued or in flight);
  a republish that must not be dropped passes a new dedupe id.

Connection handling: nothing connects until the first call. A call made while
NATS is unreachable raises ``TemporaryFault`` within about ``connect_timeout``
seconds; the next call tries again, so a queue created while NATS was down works
once it is back. After a first successful connect the nats-py client reconnects
by itself; while it is reconnecting calls fail fast with ``TemporaryFault``, and
after it reconnects the stream and consumer are re-declared (idempotent), in case
the server came back without its state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Awaitable, Callable, Coroutine, Mapping, Optional, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from videojobs.common.errors import TemporaryFault
from videojobs.common.ports.queue import QueueService

log = logging.getLogger(__name__)

T = TypeVar("T")

# JetStream error code: "stream name already in use with a different configuration".
_STREAM_CONFIG_MISMATCH = 10058
# Message headers that carry the trace context (W3C Trace Context).
TRACE_HEADERS = ("traceparent", "tracestate")
# nats-py rejects fetch timeouts <= 0; JetStream needs a little time to answer a pull.
_MIN_FETCH_SECONDS = 0.05
# A server gone silent without closing the connection (its host died, a partition) is taken for gone once
# MAX_OUTSTANDING_PINGS pings, PING_INTERVAL s apart, went unanswered, and the client reconnects: within
# about 15 s, not after nats-py's default 2 x 120 s. Until then every call times out.
PING_INTERVAL = 5
MAX_OUTSTANDING_PINGS = 2


class JetStreamQueue(QueueService):
    """A work queue on a JetStream stream with one durable pull consumer, behind a sync API.

    The nats-py client is asyncio-only while the worker loop is synchronous, so every
    instance owns one private event loop running in a daemon thread; public methods
    submit coroutines to it and wait for them with a timeout. Instances are safe to
    share between threads.
    """

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        stream: str = "VIDEOJOBS",
        subject: str = "videojobs.jobs",
        durable: str = "workers",
        ack_wait: float = 30.0,
        max_deliver: int = 3,
        connect_timeout: float = 2.0,
        op_timeout: float = 5.0,
        duplicate_window: float = 120.0,
        name: str = "videojobs",
    ) -> None:
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        if not servers:
            raise ValueError("at least one NATS server URL is required")
        if ack_wait <= 0 or max_deliver < 1:
            raise ValueError("ack_wait must be > 0 and max_deliver >= 1")
        self._servers = list(servers)
        self._stream = stream
        self._subject = subject
        self._durable = durable
        self._ack_wait = float(ack_wait)
        self._max_deliver = int(max_deliver)
        self._connect_timeout = float(connect_timeout)
        self._op_timeout = float(op_timeout)
        self._duplicate_window = float(duplicate_window)
        self._name = name

        self._state_lock = threading.Lock()
        self._fetch_lock = threading.Lock()  # one pull request at a time per instance
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._in_flight: dict[str, Msg] = {}

        # Only touched from the private loop.
        self._nc: Optional[NATS] = None
        self._js: Any = None
        self._sub: Any = None
        self._declared = False
        self._setup_lock: Optional[asyncio.Lock] = None
        self._advisories: Any = None
        self._advisory_seqs: list[int] = []

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def servers(self) -> list[str]:
        return list(self._servers)

    # -- QueueService --------------------------------------------------------------
    def enqueue(self, job_id: str, dedupe_id: str | None = None,
                trace_context: Mapping[str, str] | None = None) -> bool:
        headers = {k: v for k, v in (trace_context or {}).items() if k in TRACE_HEADERS}
        return self._call(self._publish(job_id, dedupe_id or job_id, headers), self._op_timeout)

    def dequeue(self, timeout: float = 0.0) -> Optional[str]:
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        if not self._fetch_lock.acquire(timeout=timeout):
            return None
        try:
            wait = max(_MIN_FETCH_SECONDS, deadline - time.monotonic())
            msg = self._call(self._fetch(wait), wait + self._op_timeout)
        finally:
            self._fetch_lock.release()
        if msg is None:
            return None
        job_id = msg.data.decode()
        with self._state_lock:
            self._in_flight[job_id] = msg
        return job_id

    def size(self) -> int:
        return self._call(self._num_pending(), self._op_timeout)

    def ack(self, job_id: str) -> None:
        self._settle(job_id, lambda msg: msg.ack())

    def nak(self, job_id: str, delay: float = 0.0) -> None:
        self._settle(job_id, lambda msg: msg.nak(delay=delay if delay > 0 else None))

    def term(self, job_id: str) -> None:
        self._settle(job_id, lambda msg: msg.term())

    def heartbeat(self, job_id: str) -> None:
        with self._state_lock:
            msg = self._in_flight.get(job_id)
        if msg is not None:
            self._call(self._respond(msg.in_progress), self._op_timeout)

    def reclaim_dead(self) -> list[str]:
        """Messages JetStream stopped delivering (MaxDeliver advisories): deleted, their job ids returned.

        The advisory subscription starts on the first call; advisories published
        while nobody listened are caught later by ``purge`` once their job is final.
        """
        return self._call(self._reclaim_dead(), self._op_timeout * 4)

    def purge(self, is_final: Callable[[str], bool], limit: int = 1000) -> int:
        # `is_final` reads the database: it runs here, never on the event loop, where a database that
        # does not answer would stall every NATS call of this process (publishing, fetching, acks).
        stored = self._call(self._stored_messages(limit), self._op_timeout * 4 + limit * 0.05)
        final = [seq for seq, message in stored if is_final(message)]
        return self._call(self._delete_messages(final), self._op_timeout * 4 + len(final) * 0.05)

    def delivery_count(self, job_id: str) -> int:
        with self._state_lock:
            msg = self._in_flight.get(job_id)
        return msg.metadata.num_delivered if msg is not None else 0

    def trace_context(self, job_id: str) -> dict[str, str]:
        with self._state_lock:
            msg = self._in_flight.get(job_id)
        headers = (msg.headers or {}) if msg is not None else {}
        return {k: headers[k] for k in TRACE_HEADERS if k in headers}

    def ping(self) -> None:
        self._call(self._ping(), self._op_timeout + self._connect_timeout)

    def close(self) -> None:
        """Unsubscribe and drain the connection. In-flight messages are not nak'ed:
        the server redelivers them after AckWait (nak them first for a prompt hand-back)."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            self._in_flight.clear()
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(self._op_timeout + 2)
        except Exception as exc:  # closing must not raise; the process is going away anyway
            log.warning("closing the NATS connection failed: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()

    def delete_stream(self) -> None:
        """Delete the stream and its consumer (test isolation and admin tooling only)."""
        self._call(self._delete_stream(), self._op_timeout + self._connect_timeout)

    # -- sync/async bridge ------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._state_lock:
            if self._closed:
                raise RuntimeError("JetStreamQueue is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"nats-queue-{self._stream}", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        try:
            loop = self._ensure_loop()
        except BaseException:
            coro.close()
            raise
        fut = asyncio.run_coroutine_threadsafe(self._guard(coro), loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            # _guard turns every timeout inside the loop into TemporaryFault, so this
            # one is the bridge's own: the loop did not answer in time.
            fut.cancel()
            raise TemporaryFault(
                f"NATS at {self._servers_text()} did not answer within {timeout:.1f}s"
            ) from None

    async def _guard(self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except TemporaryFault:
            raise
        except nats.js.errors.NotFoundError as exc:
            self._declared = False  # stream or consumer vanished: declare again next call
            raise TemporaryFault(f"JetStream stream {self._stream!r} not found: {exc}") from exc
        except nats.js.errors.ServiceUnavailableError as exc:
            raise TemporaryFault(f"JetStream at {self._servers_text()} unavailable: {exc}") from exc
        except nats.js.errors.APIError:
            raise  # a bad request is a configuration error, not worth retrying
        except nats.errors.NoRespondersError as exc:
            self._declared = False  # no stream listens on the subject (server lost its state?)
            raise TemporaryFault(f"no JetStream stream answered on {self._subject!r}") from exc
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            raise TemporaryFault(
                f"NATS at {self._servers_text()} failed: {type(exc).__name__} {exc}".rstrip()
            ) from exc

    def _servers_text(self) -> str:
        return ",".join(self._servers)

    def _settle(self, job_id: str, op: Callable[[Msg], Awaitable[None]]) -> None:
        with self._state_lock:
            msg = self._in_flight.pop(job_id, None)
        if msg is None:
            return
        try:
            self._call(self._respond(lambda: op(msg)), self._op_timeout)
        except BaseException:
            with self._state_lock:  # still in flight: the caller may retry
                self._in_flight.setdefault(job_id, msg)
            raise

    # -- coroutines (run on the private loop) -----------------------------------------
    async def _connected(self) -> NATS:
        if self._setup_lock is None:
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self._nc is not None and self._nc.is_closed:
                self._nc, self._js, self._sub, self._declared = None, None, None, False
                self._advisories = None
            if self._nc is None:
                self._nc = await self._connect()
                self._js = self._nc.jetstream(timeout=self._op_timeout)
            nc = self._nc
            if not nc.is_connected:
                raise TemporaryFault(
                    f"NATS at {self._servers_text()} is unreachable (client is reconnecting)"
                )
            if not self._declared:
                await self._declare()
                self._declared = True
            return nc

    async def _connect(self) -> NATS:
        nc = NATS()
        connected = False
        failures: list[Exception] = []
        all_failed = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            if not connected:
                failures.append(exc)
                if len(failures) >= len(self._servers):
                    all_failed.set()
                return
            log.warning("NATS client error: %s %s", type(exc).__name__, exc)

        async def on_disconnected() -> None:
            if connected and not self._closed:
                log.warning("disconnected from NATS at %s", self._servers_text())

        async def on_reconnected() -> None:
            log.info("reconnected to NATS at %s", _url(nc))
            self._declared = False  # the server may have come back without the stream

        # nats-py retries the first connect forever when reconnects are allowed. Give
        # up once every server refused (or connect_timeout passed) so callers get a
        # TemporaryFault at once and retry on their own schedule.
        connecting = asyncio.ensure_future(
            nc.connect(
                servers=self._servers,
                name=self._name,
                connect_timeout=self._connect_timeout,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                ping_interval=PING_INTERVAL,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                drain_timeout=self._op_timeout,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
        )
        failed = asyncio.ensure_future(all_failed.wait())
        await asyncio.wait({connecting, failed}, timeout=self._connect_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        error: Optional[BaseException] = None
        if connecting.done():
            error = connecting.exception()
        else:
            connecting.cancel()
            try:
                await connecting
            except BaseException:
                pass
            error = failures[-1] if failures else asyncio.TimeoutError("connect timed out")
        if error is not None:
            try:
                await nc.close()
            except Exception:
                pass
            raise TemporaryFault(
                f"cannot connect to NATS at {self._servers_text()}: "
                f"{type(error).__name__} {error}".rstrip()
            ) from error
        connected = True
        log.info("connected to NATS at %s", _url(nc))
        return nc

    async def _declare(self) -> None:
        stream_cfg = StreamConfig(
            name=self._stream,
            subjects=[self._subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=self._duplicate_window,
        )
        try:
            await self._js.add_stream(stream_cfg)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_CONFIG_MISMATCH:
                raise
            await self._js.update_stream(stream_cfg)
        # Creating a durable that exists with another config updates it (server >= 2.9).
        await self._js.add_consumer(
            self._stream,
            ConsumerConfig(
                name=self._durable,
                durable_name=self._durable,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait,
                max_deliver=self._max_deliver,
                filter_subject=self._subject,
            ),
        )
        if self._sub is None:
            self._sub = await self._js.pull_subscribe_bind(durable=self._durable, stream=self._stream)

    async def _publish(self, job_id: str, dedupe_id: str, trace_headers: dict[str, str]) -> bool:
        await self._connected()
        ack = await self._js.publish(
            self._subject,
            job_id.encode(),
            timeout=self._op_timeout,
            stream=self._stream,
            headers={**trace_headers, "Nats-Msg-Id": dedupe_id},
        )
        if ack.duplicate:
            log.debug("job %s: message %s already published (dropped as a duplicate)", job_id, dedupe_id)
        return not ack.duplicate

    async def _reclaim_dead(self) -> list[str]:
        nc = await self._connected()
        if self._advisories is None:
            subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self._stream}.{self._durable}"
            seqs: list[int] = []

            async def on_advisory(msg: Msg) -> None:
                try:
                    seqs.append(int(json.loads(msg.data)["stream_seq"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable MaxDeliver advisory: %r", msg.data[:200])

            self._advisory_seqs = seqs
            self._advisories = await nc.subscribe(subject, cb=on_advisory)
            await self._round_trip()
        reclaimed: list[str] = []
        while self._advisory_seqs:
            seq = self._advisory_seqs.pop(0)
            job_id = await self._take_message(seq)
            if job_id is not None:
                reclaimed.append(job_id)
        return reclaimed

    async def _stored_messages(self, limit: int) -> list[tuple[int, str]]:
        """(sequence, message) of the first `limit` sequences the stream holds."""
        await self._connected()
        info = await self._js.stream_info(self._stream)
        # Sequences start at 1: a stream that never held a message reports first = last = 0, and asking for
        # message 0 is a bad request (every reconcile pass failed with it until the first submit).
        first, last = max(1, int(info.state.first_seq or 0)), int(info.state.last_seq or 0)
        stored = []
        for seq in range(first, min(last, first + limit - 1) + 1):
            try:
                raw = await self._js.get_msg(self._stream, seq)
            except nats.js.errors.NotFoundError:
                continue  # acked and gone (work-queue retention), or deleted
            if raw.data:
                stored.append((seq, raw.data.decode()))
        return stored

    async def _delete_messages(self, seqs: list[int]) -> int:
        """Delete the messages at `seqs` (sequences are never reused); how many were still there."""
        await self._connected()
        removed = 0
        for seq in seqs:
            try:
                removed += bool(await self._js.delete_msg(self._stream, seq))
            except nats.js.errors.NotFoundError:
                continue  # acked or deleted meanwhile
        return removed

    async def _take_message(self, seq: int) -> Optional[str]:
        """Delete the message at `seq` and return its job id (None if it is gone already)."""
        try:
            raw = await self._js.get_msg(self._stream, seq)
            await self._js.delete_msg(self._stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        return raw.data.decode() if raw.data else None

    async def _fetch(self, timeout: float) -> Optional[Msg]:
        await self._connected()
        try:
            msgs = await self._sub.fetch(1, timeout=timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return None
        return msgs[0] if msgs else None

    async def _respond(self, send: Callable[[], Awaitable[None]]) -> None:
        await self._connected()
        await send()
        await self._round_trip()  # acks are fire-and-forget publishes: this confirms the server has them

    async def _round_trip(self) -> None:
        """A request the server answers after every command this connection sent before it.

        Not ``nc.flush``: nats-py (2.16) leaves the PONG future of a flush that timed out in its queue, and
        the late PONG then ends the client's read loop; the connection still looks connected, and every
        later call times out. A request that times out is forgotten, and its late reply dropped."""
        await self._js.account_info()

    async def _num_pending(self) -> int:
        await self._connected()
        info = await self._js.consumer_info(self._stream, self._durable)
        return int(info.num_pending or 0)

    async def _ping(self) -> None:
        await self._connected()
        await self._js.stream_info(self._stream)  # a round trip to the server and its JetStream

    async def _delete_stream(self) -> None:
        await self._connected()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        self._declared = False
        try:
            await self._js.delete_stream(self._stream)
        except nats.js.errors.NotFoundError:
            pass

    async def _aclose(self) -> None:
        nc, sub = self._nc, self._sub
        self._nc, self._js, self._sub, self._advisories = None, None, None, None
        if nc is None or nc.is_closed:
            return
        if sub is not None and nc.is_connected:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        # drain() waits on subscriptions' pending queues, which pull fetches never mark
        # done; with the pull subscription gone it only flushes pending publishes.
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()


def _url(nc: NATS) -> str:
    url = nc.connected_url
    return url.netloc if url is not None else "?"
