"""The gateway's HTTP/1.1 server protocol: uvicorn's h11 one, with two answers of its own.

- A request that is not valid HTTP (a malformed request line or header, e.g. ``Content-Length: abc``)
  is refused by the HTTP parser before the app sees it. uvicorn answers it with a ``text/plain`` body
  of its own, which neither the OpenAPI document nor a client reading ``application/problem+json``
  expects; here it is a bad-request problem.
- A connection must send a whole request line and headers within ``header_timeout`` seconds of
  opening, or of its last answer. uvicorn waits for them for ever once a byte has arrived, so a
  client that trickles header bytes (slowloris), or opens connections and sends nothing, held a file
  descriptor each until the process had none left and every other client waited (measured: 20,000
  idle connections made a normal request time out). Here such a connection gets a request-timeout
  problem if it had started a request, and is closed. A request whose head has arrived is the app's
  to time (the upload's idle and total timeouts).
- A client that stops reading an answer (a slow-read attack, or a reader gone without closing) held
  the connection and the answer's state for ever: uvicorn waits for the socket to drain with no limit.
  Here, once the transport's buffer is full, the client has ``send_timeout`` seconds to take some of it
  (reading slowly is fine: every drain restarts the clock); otherwise the connection is aborted.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from videojobs.common.errors import BAD_REQUEST, REQUEST_TIMEOUT, Problem
from videojobs.gateway.metrics import PROTOCOL_REFUSALS, STALLED_READERS
from videojobs.gateway.problems import PROBLEM_JSON, problem_body

MALFORMED_HTTP = "the request is not valid HTTP/1.1 (a malformed request line or header)"


class ProblemH11Protocol(H11Protocol):
    def __init__(self, *args: Any, header_timeout: float, send_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        self._drain_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts a pipelined request already received, if any
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_deadline = _cancelled(self._header_deadline)
        self._drain_deadline = _cancelled(self._drain_deadline)
        super().connection_lost(exc)

    def pause_writing(self) -> None:  # the transport's buffer is full: the client must read some of it in time
        super().pause_writing()
        if self._drain_deadline is None:
            self._drain_deadline = self.loop.call_later(self.send_timeout, self._drain_deadline_passed)

    def resume_writing(self) -> None:
        self._drain_deadline = _cancelled(self._drain_deadline)
        super().resume_writing()

    def send_400_response(self, msg: str) -> None:
        self._answer_and_close(BAD_REQUEST, "Bad Request", MALFORMED_HTTP)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = _cancelled(self._header_deadline)
        if not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # a request is being answered: the app times its body
        started, _ = self.conn.trailing_data  # bytes of a request head not yet complete
        if self.conn.their_state is h11.IDLE and started:
            self._answer_and_close(REQUEST_TIMEOUT, "Request Timeout",
                                   f"the request line and headers did not arrive within {self.header_timeout:g} s")
        else:  # nothing sent since the last answer, or a body the app did not read: just close
            self.transport.close()

    def _drain_deadline_passed(self) -> None:
        self._drain_deadline = None
        if not self.transport.is_closing():
            STALLED_READERS.inc()
            self.transport.abort()  # the answer cannot be finished: the client sees it cut short

    def _answer_and_close(self, problem: Problem, reason: str, detail: str) -> None:
        """Answer with a problem and close, outside h11's state machine: h11 frames no answer to a request it
        has not parsed, so the status line and the three headers are written here."""
        body = json.dumps(problem_body(problem, detail)).encode()
        head = (f"HTTP/1.1 {problem.http_status} {reason}\r\ncontent-type: {PROBLEM_JSON}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()
        PROTOCOL_REFUSALS.labels(problem.slug).inc()


def _cancelled(timer: asyncio.TimerHandle | None) -> None:
    """Cancel `timer` if there is one; None, for the attribute that held it."""
    if timer is not None:
        timer.cancel()
