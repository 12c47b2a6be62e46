"""Log lines, request metrics, trace context through the in-process queue, worker ids."""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.fakes import FakeAnalyzer, FakeJobRepository
from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.config import Settings
from videojobs.common.job import Job, JobStatus
from videojobs.common.observability import logs
from videojobs.common.outbox import OutboxRelay
from videojobs.gateway.app import create_app
from videojobs.worker.worker import JobWorker, default_worker_id


@pytest.fixture
def captured(captured_logs):
    return captured_logs


def test_json_lines_carry_service_context_and_exceptions(captured):
    stream = captured("json")
    log = logging.getLogger("videojobs.test")
    log.info("plain")
    with logs.bind(worker_id="w-1"), logs.bind(job_id="j-1", attempt=2):
        log.warning("job line %d", 7, extra={"duration_seconds": 1.5})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.info("after")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 4
    plain, job, failed, after = lines
    assert list(plain)[:5] == ["time", "level", "service", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", plain["time"])
    assert plain["service"] == "test" and plain["level"] == "INFO" and "job_id" not in plain
    assert job["message"] == "job line 7" and job["level"] == "WARNING"
    assert (job["worker_id"], job["job_id"], job["attempt"], job["duration_seconds"]) == ("w-1", "j-1", 2, 1.5)
    assert "ValueError: boom" in failed["exception"] and failed["job_id"] == "j-1"
    assert "worker_id" not in after and "trace_id" not in after  # the context ended with the block


def test_bound_context_follows_work_handed_to_another_thread(captured):
    stream = captured("json")
    with logs.bind(job_id="j-2"):
        thread = threading.Thread(target=logs.in_current_context(lambda: logging.getLogger("x").info("beat")))
    thread.start()
    thread.join()
    assert json.loads(stream.getvalue())["job_id"] == "j-2"


def test_text_lines_are_readable(captured):
    stream = captured("text")
    with logs.bind(job_id="j-3", attempt=1):
        logging.getLogger("videojobs.test").info("hello")
    line = stream.getvalue().strip()
    assert re.fullmatch(r"\S+Z INFO test videojobs\.test: hello \[job_id=j-3 attempt=1\]", line), line


def test_unknown_format_and_context_fields_are_refused():
    with pytest.raises(ValueError):
        logs.configure_logging("unit", "INFO", "xml")
    with pytest.raises(ValueError):
        with logs.bind(tenant="x"):
            pass


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rest_requests_are_counted_by_route_template_never_by_raw_path(captured):
    stream = captured("json")
    app = create_app(Settings(), api_target="127.0.0.1:1")  # no api: status reads fail with 503
    route = "/video/status/{job_id}"
    before = sample("videojobs_http_requests_total", method="GET", route=route, status="503")
    before_unmatched = sample("videojobs_http_requests_total", method="GET", route="<unmatched>", status="404")
    with TestClient(app) as client:
        for _ in range(2):
            assert client.get("/video/status/3f2b7c1e-0000-4000-8000-000000000000").status_code == 503
        assert client.get("/no/such/path/123").status_code == 404
        exposition = client.get("/metrics")
    assert exposition.status_code == 200 and "videojobs_http_requests_total" in exposition.text
    assert sample("videojobs_http_requests_total", method="GET", route=route, status="503") == before + 2
    assert sample("videojobs_http_requests_total", method="GET", route="<unmatched>", status="404") == before_unmatched + 1
    assert "3f2b7c1e" not in exposition.text and "/no/such/path" not in exposition.text
    access = [json.loads(line) for line in stream.getvalue().splitlines()
              if json.loads(line)["logger"] == "videojobs.gateway.access"]
    assert [a["http_route"] for a in access] == [route, route, "<unmatched>"]  # /metrics is not access-logged
    assert access[0]["http_status"] == 503 and access[0]["duration_seconds"] > 0


def test_gateway_refusals_are_counted_by_reason():
    app = create_app(Settings(max_upload_bytes=1000), api_target="127.0.0.1:1")
    before = sample("videojobs_upload_refusals_total", reason="unsupported-media-type")
    with TestClient(app) as client:
        r = client.post("/video/submit", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert sample("videojobs_upload_refusals_total", reason="unsupported-media-type") == before + 1


def test_the_outbox_hands_the_stored_trace_context_to_the_queue():
    from videojobs.common.observability import tracing
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    repo, queue = FakeJobRepository(), InMemoryQueue()
    job = Job.submit("yolo")
    parent = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    repo.add(job, trace_context=parent)
    tracing.configure_tracing("unit", exporter=InMemorySpanExporter())
    try:
        OutboxRelay(repo, queue).publish_pending()
    finally:
        tracing.disable()
    assert queue.dequeue() == job.job_id
    carried = queue.trace_context(job.job_id)
    # the same trace, one hop further (the publish span)
    assert carried["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert carried["traceparent"] != parent["traceparent"]
    queue.ack(job.job_id)
    assert queue.trace_context(job.job_id) == {}


def test_without_tracing_nothing_is_stored_or_sent():
    from videojobs.common.observability import tracing

    assert not tracing.enabled()
    assert tracing.inject() == {}
    with tracing.span(tracing.tracer("x"), "no-op") as span:
        assert span is None
    assert tracing.grpc_server_interceptors() == [] and tracing.grpc_aio_client_interceptors() == []


def test_worker_ids_are_unique_per_process_and_thread(tmp_path):
    ids = {default_worker_id() for _ in range(5)}
    assert len(ids) == 5
    repo, queue = FakeJobRepository(), InMemoryQueue()
    workers = [JobWorker(queue, None, repo, FakeAnalyzer()) for _ in range(3)]  # type: ignore[arg-type]
    assert len({w.worker_id for w in workers}) == 3


def test_worker_metrics_count_finished_jobs_and_busy_threads(tmp_path):
    from videojobs.storage.local import LocalFolderStorage

    storage = LocalFolderStorage(tmp_path)
    repo, queue = FakeJobRepository(), InMemoryQueue()
    job = Job.submit("ocr")
    storage.save_bytes(b"\x00\x00\x00\x18ftypisom", job.input_key)
    repo.add(job)
    queue.enqueue(job.job_id)
    before = {
        "done": sample("videojobs_jobs_finished_total", pipeline="ocr", status="COMPLETED"),
        "frames": sample("videojobs_frames_analysed_total", pipeline="ocr"),
        "wait": sample("videojobs_job_queue_wait_seconds_count", pipeline="ocr"),
        "store": sample("videojobs_stage_seconds_count", pipeline="ocr", stage="store"),
    }
    worker = JobWorker(queue, storage, repo, FakeAnalyzer(frames=4))
    assert worker.run_once()
    assert repo.get(job.job_id).status is JobStatus.COMPLETED
    assert sample("videojobs_jobs_finished_total", pipeline="ocr", status="COMPLETED") == before["done"] + 1
    assert sample("videojobs_frames_analysed_total", pipeline="ocr") == before["frames"] + 4
    assert sample("videojobs_job_queue_wait_seconds_count", pipeline="ocr") == before["wait"] + 1
    assert sample("videojobs_stage_seconds_count", pipeline="ocr", stage="store") == before["store"] + 1
    assert sample("videojobs_worker_busy_threads") == 0
