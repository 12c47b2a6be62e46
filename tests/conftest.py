"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

# The test process gets what every videojobs process gets from videojobs/cli.py on import: no gRPC
# fork handlers. It forks the test servers (initdb, pg_ctl, nats-server, weed) while in-process gRPC
# servers and channels of earlier tests still run; once, gRPC's handler in a forked child crashed it
# (SIGSEGV) before exec.
import videojobs.cli  # noqa: E402, F401  (before anything imports grpc)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` once, under its own name (``scripts/`` is not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def captured_logs():
    """`configure(fmt)`: route every logger of the process into a buffer, as a service's set-up
    does (json or text); the previous handlers come back afterwards."""
    import io
    import logging

    from videojobs.common.observability import logs

    def configure(fmt: str = "json"):
        stream = io.StringIO()
        logs.configure_logging("test", "INFO", fmt, stream=stream)
        return stream

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield configure
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


# -- S3 test server (SeaweedFS, data on disk), shared by the storage contract tests and
# anything else that needs MinIO's role. Set VIDEOJOBS_TEST_S3_ENDPOINT=host:port to use a
# server that is already running (e.g. one started by `make up`); it must accept the
# access key and secret `testing`/`testing`.
@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """host:port of an S3-compatible server for the whole test session."""
    preset = os.environ.get("VIDEOJOBS_TEST_S3_ENDPOINT")
    if preset:
        yield preset
        return
    servers = load_script("servers")
    with servers.SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as s3:
        yield s3.endpoint
