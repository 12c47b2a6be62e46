"""Gateway composition root: `videojobs gateway` serves REST and forwards to the gRPC api."""

from __future__ import annotations

import argparse
import functools
import signal
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

from videojobs.common.config import Settings, load_settings
from videojobs.common import observability
from videojobs.common.observability import tracing
from videojobs.common.serving import bind_http
from videojobs.gateway.app import create_app
from videojobs.gateway.protocol import ProblemH11Protocol


def bind(settings: Settings) -> socket.socket:
    """The REST port, bound before anything announces itself (PortInUse if taken)."""
    return bind_http(settings.bind_host, settings.http_port, "REST")


def serve_http(app: FastAPI, settings: Settings, sock: socket.socket) -> None:
    """Run uvicorn on `sock` until SIGTERM/SIGINT, then return (so callers can shut the rest down in order).

    uvicorn re-raises the signal it caught once it has stopped; with our own
    handlers in place that re-raise lands here instead of killing the process.
    """
    caught: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    uvicorn.Server(server_config(app, settings)).run(sockets=[sock])


def server_config(app: FastAPI, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for the gateway (the tests' real-HTTP gateways use them too, `options` overriding):
    a request that is not valid HTTP, or whose headers do not arrive in time, is answered with a problem, and
    a client that stops reading an answer is cut off (gateway/protocol.py); logging is ours (one format for
    every line) and the access log is written by the metrics middleware."""
    protocol = functools.partial(ProblemH11Protocol, header_timeout=settings.http_header_timeout_seconds,
                                 send_timeout=settings.http_send_timeout_seconds)
    return uvicorn.Config(app, **{"http": protocol, "log_level": settings.log_level.lower(), "log_config": None,
                                  "access_log": False, **options})


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="videojobs gateway", description="Serve the REST gateway.").parse_args(argv)
    settings = load_settings()
    observability.configure("gateway", settings)
    sock = bind(settings)
    serve_http(create_app(settings), settings, sock)
    tracing.shutdown_tracing()
    return 0
