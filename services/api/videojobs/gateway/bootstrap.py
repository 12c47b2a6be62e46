"""Gateway composition root: `videojobs gateway` serves REST and forwards to the gRPC api."""

from __future__ import annotations

import argparse
import signal
import socket

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
    uvicorn.Server(server_config(app, settings.log_level)).run(sockets=[sock])


def server_config(app: FastAPI, log_level: str, **options: object) -> uvicorn.Config:
    """uvicorn's settings for the gateway (the tests' real-HTTP gateways use them too): a request that is not
    valid HTTP is answered with a problem, logging is ours (one format for every line) and the access log is
    written by the metrics middleware."""
    return uvicorn.Config(app, http=ProblemH11Protocol, log_level=log_level.lower(), log_config=None,
                          access_log=False, **options)


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="videojobs gateway", description="Serve the REST gateway.").parse_args(argv)
    settings = load_settings()
    observability.configure("gateway", settings)
    sock = bind(settings)
    serve_http(create_app(settings), settings, sock)
    tracing.shutdown_tracing()
    return 0
