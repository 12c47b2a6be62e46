"""Gateway composition root: `videojobs gateway` serves REST and forwards to the gRPC api."""

from __future__ import annotations

import argparse
import signal

import uvicorn
from fastapi import FastAPI

from videojobs.common.config import Settings, load_settings
from videojobs.common.logs import configure_logging
from videojobs.gateway.app import create_app


def serve_http(app: FastAPI, settings: Settings) -> None:
    """Run uvicorn until SIGTERM/SIGINT, then return (so callers can shut the rest down in order).

    uvicorn re-raises the signal it caught once it has stopped; with our own
    handlers in place that re-raise lands here instead of killing the process.
    """
    caught: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    uvicorn.run(app, host=settings.bind_host, port=settings.http_port, log_level=settings.log_level.lower())


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="videojobs gateway", description="Serve the REST gateway.").parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    serve_http(create_app(settings.api_target, settings.max_upload_bytes, settings.upload_chunk_bytes), settings)
    return 0
