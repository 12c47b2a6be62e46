"""Fixtures for in-process integration tests of the api and gateway on embedded adapters."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from tests.fakes import FakeAnalyzer, fake_detections
from videojobs.api.bootstrap import build_api
from videojobs.common.adapters.factory import make_capability_store
from videojobs.common.adapters.sql.engine import make_engine
from videojobs.common.config import Settings
from videojobs.v1 import jobs_pb2_grpc
from videojobs.worker.worker import JobWorker, WorkerPolicy

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SAMPLE = SHARED / "media" / "bottle-detection.mp4"
MAX_UPLOAD = 2 * 1024 * 1024
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # the machine's own server


@pytest.fixture
def pg_engine():
    """An engine on the machine's Postgres, on a schema of its own (dropped afterwards)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    eng = make_engine(POSTGRES_URL, schema)
    yield eng
    eng.dispose()
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def api(tmp_path):
    settings = Settings(data_dir=tmp_path, grpc_port=0, max_upload_bytes=MAX_UPLOAD)
    app = build_api(settings)
    app.start()
    yield app
    app.stop(grace=0)


@pytest.fixture
def stub(api):
    channel = grpc.insecure_channel(f"127.0.0.1:{api.port}")
    yield jobs_pb2_grpc.JobServiceStub(channel)
    channel.close()


def start_fake_worker(api) -> tuple[JobWorker, threading.Thread]:
    """A worker thread on the api's queue with a fake analyzer (no model needed), running."""
    analyzer = FakeAnalyzer(frames=5)
    worker = JobWorker(api.queue, api.storage, api.repo, analyzer,
                       WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=1, idle_backoff_max=0.1),
                       capabilities=make_capability_store(api.repo))
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    return worker, thread


@pytest.fixture
def fake_worker(api):
    worker, thread = start_fake_worker(api)
    yield worker
    worker.request_stop()
    thread.join(10)


@pytest.fixture
def imaging_worker(api):
    """A worker thread with a fake analyzer that reports detections and keeps frame images (320x180)."""
    from videojobs.common.frames import FrameImageStore
    from videojobs.worker.frames import FrameImageWriter

    analyzer = FakeAnalyzer(frames=5, size=(320, 180))
    analyzer.detections_for = fake_detections
    worker = JobWorker(api.queue, api.storage, api.repo, analyzer,
                       WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=1, idle_backoff_max=0.1),
                       capabilities=make_capability_store(api.repo),
                       frame_images=FrameImageWriter(FrameImageStore(api.storage), max_side=1280))
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    yield worker
    worker.request_stop()
    thread.join(10)
