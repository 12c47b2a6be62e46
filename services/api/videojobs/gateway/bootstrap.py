"""Gateway composition root: `videojobs gateway` serves REST and forwards to the gRPC api."""

from __future__ import annotations

import argparse

import uvicorn

from videojobs.common.config import load_settings
from videojobs.common.logs import configure_logging
from videojobs.gateway.app import create_app


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="videojobs gateway", description="Serve the REST gateway.").parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    app = create_app(settings.api_target, settings.max_upload_bytes, settings.upload_chunk_bytes)
    uvicorn.run(app, host=settings.bind_host, port=settings.http_port, log_level=settings.log_level.lower())
    return 0
