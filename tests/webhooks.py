"""A loopback webhook receiver and the Standard Webhooks signature check, written out for the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every POST; answers `fail_code` to the first `fail_first` of them and `ok_code` after."""

    def __init__(self, fail_first: int = 0, fail_code: int = 500, ok_code: int = 204, path: str = "/hooks") -> None:
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.ok_code = ok_code
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                code = fail_code if len(receiver.requests) < fail_first else ok_code
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, code))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict]:
        """The events of the successful deliveries."""
        return [json.loads(body) for _, body, code in self.requests if code == self.ok_code]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> None:
    """v1 = base64(HMAC-SHA256(base64-decoded secret, f"{id}.{timestamp}.{body}")), timestamp within 5 minutes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert expected in headers["webhook-signature"].split(" ")
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 300
