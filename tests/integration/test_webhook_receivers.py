"""Receivers that misbehave: a callback URL is any public host a tenant names, so the dispatcher
must not let one hold its attempts or fill the api's memory.

The receivers are real sockets on loopback; the outbox and the tenant store are small doubles of
their ports (the SQL ones are covered in test_lifecycle.py), so each pass holds exactly one delivery.
"""

from __future__ import annotations

import socket
import threading
from datetime import datetime

import pytest

from videojobs.api.webhooks import WebhookDispatcher, WebhookPolicy
from videojobs.common.job import utcnow
from videojobs.common.ports.webhooks import Delivery, WebhookOutbox
from videojobs.common.tenants import Tenant

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class OneDelivery(WebhookOutbox):
    """Holds one delivery to `url`; records what the dispatcher made of it."""

    def __init__(self, url: str) -> None:
        self.delivery = Delivery("msg_1", "alpha", "job-1", url, {"type": "job.completed", "data": {}}, 1, utcnow())
        self.outcome: tuple[str, str | None] | None = None

    def claim_due(self, now: datetime, limit: int, hold_until: datetime) -> list[Delivery]:
        return [] if self.outcome else [self.delivery]

    def delivered(self, delivery_id: str, at: datetime) -> None:
        self.outcome = ("delivered", None)

    def retry_at(self, delivery_id: str, when: datetime, error: str) -> None:
        self.outcome = ("retry", error)

    def give_up(self, delivery_id: str, at: datetime, error: str) -> None:
        self.outcome = ("given up", error)

    def deliveries_of(self, job_id: str) -> list[dict]:
        raise NotImplementedError


class Tenants:
    def get_tenant(self, tenant_id: str) -> Tenant:
        return Tenant(tenant_id, SECRET, utcnow())


class RawReceiver:
    """Accepts one connection, reads the request, then sends `answer` in `piece`-byte writes with
    `pause` seconds between them, until it is all sent or the dispatcher closes the connection."""

    def __init__(self, answer: bytes, piece: int, pause: float = 0.0) -> None:
        self.sent = 0
        self.cut_off = threading.Event()
        self.done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hooks"
        threading.Thread(target=self._serve, args=(answer, piece, pause), daemon=True).start()

    def _serve(self, answer: bytes, piece: int, pause: float) -> None:
        connection, _ = self._listener.accept()
        try:
            connection.recv(65536)
            view = memoryview(answer)
            while self.sent < len(answer):
                connection.sendall(view[self.sent:self.sent + piece])
                self.sent += len(view[self.sent:self.sent + piece])
                if pause:
                    self.cut_off.wait(pause)
        except OSError:  # the dispatcher closed the connection
            self.cut_off.set()
        finally:
            connection.close()
            self._listener.close()
            self.done.set()


def dispatch(receiver: RawReceiver, timeout_seconds: float) -> OneDelivery:
    outbox = OneDelivery(receiver.url)
    dispatcher = WebhookDispatcher(outbox, Tenants(), WebhookPolicy(allow_private=True,
                                                                    timeout_seconds=timeout_seconds))
    try:
        assert dispatcher.dispatch_once() == 1
    finally:
        dispatcher.stop()
    return outbox


def test_a_receiver_dribbling_its_answer_is_timed_out_and_cut_off():
    # a whole 200 answer, a byte every 0.25 s: about 25 s to send, against a 1 s timeout
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"a" * 50 + b"\r\n\r\n"
    receiver = RawReceiver(answer, piece=1, pause=0.25)
    outbox = dispatch(receiver, timeout_seconds=1.0)
    assert outbox.outcome == ("retry", "timed out")
    assert receiver.done.wait(30)
    assert receiver.sent < len(answer)  # the dispatcher stopped listening before the answer was over


@pytest.mark.timeout(120)
def test_a_receiver_answering_with_a_huge_body_is_delivered_without_reading_it():
    size = 512 * 1024 * 1024
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size
    receiver = RawReceiver(head + b"\0" * size, piece=1024 * 1024)
    outbox = dispatch(receiver, timeout_seconds=10.0)
    assert outbox.outcome == ("delivered", None)
    assert receiver.done.wait(60) and receiver.cut_off.is_set()
    assert receiver.sent < 64 * 1024 * 1024  # what the sockets' buffers took before the connection closed


@pytest.fixture
def tls_receiver(tmp_path):
    """An https receiver on loopback with a self-signed certificate for `localhost`; records the SNI
    name and Host header of each POST."""
    import http.server
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    seen: list[tuple[str | None, str]] = []
    names: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            seen.append((names[-1] if names else None, self.headers["host"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}/hooks", cert, seen
    server.shutdown()
    server.server_close()


def test_an_https_receiver_is_verified_and_reached_by_its_name_at_the_checked_address(tls_receiver):
    import ssl

    url, cert, seen = tls_receiver
    untrusted = OneDelivery(url)
    dispatcher = WebhookDispatcher(untrusted, Tenants(), WebhookPolicy(allow_private=True, timeout_seconds=5.0))
    dispatcher.dispatch_once()
    dispatcher.stop()
    assert untrusted.outcome == ("retry", "connection failed (ConnectError)")  # a self-signed certificate
    assert seen == []

    trusting = OneDelivery(url)
    dispatcher = WebhookDispatcher(trusting, Tenants(), WebhookPolicy(allow_private=True, timeout_seconds=5.0),
                                   tls=ssl.create_default_context(cafile=str(cert)))  # as if a public CA signed it
    dispatcher.dispatch_once()
    dispatcher.stop()
    assert trusting.outcome == ("delivered", None)
    assert seen == [("localhost", url.split("/")[2])]  # TLS and Host name the URL's host, not the address
