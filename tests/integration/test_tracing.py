"""One submit, one trace: REST request -> gRPC -> outbox row -> NATS message headers -> worker spans.

In one process with an in-memory span exporter: the gateway (FastAPI, real HTTP client),
the api (real gRPC server, SQLite job store with the outbox), NATS JetStream (a stream
of this test's own), and a worker running the real YOLO pipeline. Every JSON log line
of the job carries the same trace id.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.integration.conftest import SAMPLE
from videojobs.api.bootstrap import build_api
from videojobs.common.adapters.factory import make_capability_store
from videojobs.common.adapters.nats_queue import JetStreamQueue
from videojobs.common.config import Settings
from videojobs.common.observability import tracing
from videojobs.gateway.app import create_app
from videojobs.worker.bootstrap import build_analyzer
from videojobs.worker.worker import JobWorker, WorkerPolicy

MODEL = SAMPLE.parents[1] / "models" / "yolov8n.pt"


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("test", exporter=exporter)
    yield exporter
    tracing.disable()


@pytest.fixture
def json_log(captured_logs):
    """Every log line of the process, as the services write them in json mode."""
    return captured_logs("json")


@pytest.fixture
def traced_service(tmp_path, exporter, json_log):
    name = f"TRACE_{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path, grpc_port=0, queue_url="nats://127.0.0.1:4222", nats_stream=name,
                        nats_subject=f"videojobs.{name.lower()}", nats_durable=name.lower(), model=str(MODEL),
                        model_cache_dir=tmp_path / "models", metrics_sample_seconds=60)
    api = build_api(settings)
    api.start()
    worker_queue = JetStreamQueue("nats://127.0.0.1:4222", stream=name, subject=settings.nats_subject,
                                  durable=settings.nats_durable)
    worker = JobWorker(worker_queue, api.storage, api.repo, build_analyzer(settings),
                       WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=1, idle_backoff_max=0.2),
                       capabilities=make_capability_store(api.repo))
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    app = create_app(settings, f"127.0.0.1:{api.port}")
    with TestClient(app) as client:
        yield client, api, worker_queue
    worker.request_stop()
    thread.join(30)
    worker_queue.delete_stream()
    worker_queue.close()
    api.stop(grace=0)
    api.queue.close()


def wait_final(client, job_id: str) -> dict:
    import time

    deadline = time.time() + 180
    while True:
        status = client.get(f"/video/status/{job_id}").json()
        if status["status"] in ("COMPLETED", "FAILED"):
            return status
        assert time.time() < deadline, status
        time.sleep(0.2)


def test_one_submit_is_one_trace_through_gateway_api_queue_and_worker(traced_service, exporter, json_log, tmp_path):
    client, api, _ = traced_service
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(SAMPLE.read_bytes()[:20_000])
    jobs = []
    for data in (SAMPLE.read_bytes(), corrupt.read_bytes()):
        r = client.post("/video/submit", files={"file": ("clip.mp4", data, "video/mp4")},
                        data={"pipeline_id": "yolo", "max_frames": "2"})
        assert r.status_code == 202, r.text
        jobs.append(r.json()["job_id"])
    assert [wait_final(client, j)["status"] for j in jobs] == ["COMPLETED", "FAILED"]

    spans = exporter.get_finished_spans()
    trace_of = {}
    for job_id in jobs:
        # the outbox row kept the submit's context, the NATS message carried it
        publish = [s for s in spans if s.name == "outbox publish" and s.attributes.get("videojobs.job_id") == job_id]
        assert len(publish) == 1 and publish[0].kind is SpanKind.PRODUCER
        trace_id = publish[0].context.trace_id
        trace_of[job_id] = trace_id
        in_trace = [s for s in spans if s.context.trace_id == trace_id]
        scopes = {s.instrumentation_scope.name for s in in_trace}
        assert "opentelemetry.instrumentation.fastapi" in scopes or "opentelemetry.instrumentation.asgi" in scopes
        server = [s for s in in_trace if s.kind is SpanKind.SERVER and s.name == "/videojobs.v1.JobService/Submit"]
        client_spans = [s for s in in_trace if s.kind is SpanKind.CLIENT and s.name == "/videojobs.v1.JobService/Submit"]
        assert len(server) == 1 and len(client_spans) == 1, [s.name for s in in_trace]
        assert server[0].parent.span_id == client_spans[0].context.span_id  # gRPC metadata carried it
        (job_span,) = [s for s in in_trace if s.name == "job" and s.kind is SpanKind.CONSUMER]
        assert job_span.parent.span_id == publish[0].context.span_id  # the message headers carried it
        names = [s.name for s in in_trace]
        assert {"claim", "download", "final write"} <= set(names)
        if job_id == jobs[0]:
            assert {"analyse", "decode", "detect", "track", "store"} <= set(names)
        else:
            assert job_span.status.status_code.name == "ERROR"
    assert trace_of[jobs[0]] != trace_of[jobs[1]], "each submit starts a trace of its own"

    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    for job_id in jobs:
        lines = [r for r in records if r.get("job_id") == job_id]
        assert len(lines) >= 3, lines  # PENDING (api), RUNNING and the outcome (worker)
        assert {r["trace_id"] for r in lines} == {format(trace_of[job_id], "032x")}
