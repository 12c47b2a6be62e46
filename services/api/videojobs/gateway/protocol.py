"""The gateway's HTTP/1.1 server protocol: uvicorn's h11 one, answering a request that is not valid
HTTP with a problem+json 400 like every other error answer.

Such a request (a malformed request line or header, e.g. ``Content-Length: abc``) is refused by the
HTTP parser before the app sees it, and uvicorn answers it with a ``text/plain`` body of its own,
which neither the OpenAPI document nor a client reading ``application/problem+json`` expects.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from videojobs.common.errors import BAD_REQUEST
from videojobs.gateway.problems import PROBLEM_JSON, problem_body

MALFORMED_HTTP = "the request is not valid HTTP/1.1 (a malformed request line or header)"


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps(problem_body(BAD_REQUEST, MALFORMED_HTTP)).encode()
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        # h11 lets a server answer after the client's protocol error, as uvicorn's own method does.
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
