"""Observability on the production shape (`make up WORKERS=2`): metrics equal what happened,
JSON log lines carry the job's trace id, spans of one submit cross gateway, api and worker.

Spans leave the processes the standard way (OTLP over HTTP, `OTEL_EXPORTER_OTLP_ENDPOINT`)
to a small receiver in this test that decodes the OTLP protobuf requests.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import uuid

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import SAMPLE, JobsClient
from tests.e2e.test_stack import make_stack

pytestmark = pytest.mark.e2e

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GOOD_JOBS = 3
BAD_JOBS = 1


class OtlpReceiver:
    """OTLP/HTTP trace receiver: keeps (trace id, span name, service name) of every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append({"trace_id": span.trace_id.hex(), "name": span.name,
                                                   "service": attrs.get("service.name", ""),
                                                   "scope": scope_spans.scope.name})
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    text = httpx.get(url, timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, lbls), v in samples.items()
               if n == name and all(dict(lbls).get(k) == val for k, val in labels.items()))


def log_lines(stack) -> dict[str, list[str]]:
    return {name: (stack.state_dir / f"{name}.log").read_text().splitlines()
            for name in ["api", "gateway", "worker0", "worker1"]}


@pytest.fixture
def observed_stack(tmp_path):
    receiver = OtlpReceiver()
    stack = make_stack(tmp_path, "obs", VIDEOJOBS_METRICS_SAMPLE_SECONDS=0.5,
                       OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY=200)
    stack.s3_secret_key = f"s3-secret-{uuid.uuid4().hex}"
    stack.s3_access_key = f"s3-access-{uuid.uuid4().hex[:8]}"
    try:
        stack.up(workers=2)
        yield stack, receiver
    finally:
        stack.down(timeout=30)
        stack.purge()
        receiver.close()


def test_metrics_logs_and_traces_tell_what_happened(observed_stack, tmp_path):
    stack, receiver = observed_stack
    client = JobsClient(stack.http_port, stack.grpc_port)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(SAMPLE.read_bytes()[:20_000])  # ftyp box intact (accepted), the rest cut off
    good = [client.submit_rest(SAMPLE, pipeline_id="yolo", max_frames=3) for _ in range(GOOD_JOBS)]
    bad = [client.submit_rest(corrupt, pipeline_id="yolo") for _ in range(BAD_JOBS)]
    final = {job_id: client.wait_for(job_id, timeout=240)["status"] for job_id in good + bad}
    assert [final[j] for j in good] == ["COMPLETED"] * GOOD_JOBS and [final[j] for j in bad] == ["FAILED"] * BAD_JOBS
    frames = sum(len(client.http.get(f"/video/results/{j}").json()["results"]) for j in good)
    assert frames == 3 * GOOD_JOBS
    n = GOOD_JOBS + BAD_JOBS

    # -- metrics: every process of the stack, from the URLs `make stack-status` lists ------------
    urls = stack.metrics_urls()
    assert set(urls) == {"api", "gateway", "worker0", "worker1"}
    processes = {p["name"]: p for p in stack.processes()}
    assert all(processes[name]["alive"] and processes[name]["metrics"] == url for name, url in urls.items())

    deadline = time.time() + 30
    while True:  # the backlog gauges are sampled every 0.5 s
        api = scrape(urls["api"])
        if total(api, "videojobs_queue_depth") == 0 and total(api, "videojobs_jobs_unfinished") == 0:
            break
        assert time.time() < deadline, "queue depth / unfinished jobs never went back to 0"
        time.sleep(0.5)
    gateway = scrape(urls["gateway"])
    workers = [scrape(urls["worker0"]), scrape(urls["worker1"])]

    def worker_total(name: str, **labels: str) -> float:
        return sum(total(w, name, **labels) for w in workers)

    assert total(api, "videojobs_jobs_submitted_total", pipeline="yolo") == n
    assert total(api, "videojobs_upload_bytes_total") == GOOD_JOBS * SAMPLE.stat().st_size + BAD_JOBS * 20_000
    assert total(api, "videojobs_outbox_backlog") == 0
    assert total(api, "videojobs_grpc_server_handled_total", grpc_method="Submit", grpc_code="OK") == n
    assert worker_total("videojobs_jobs_finished_total", pipeline="yolo", status="COMPLETED") == GOOD_JOBS
    assert worker_total("videojobs_jobs_finished_total", pipeline="yolo", status="FAILED") == BAD_JOBS
    assert worker_total("videojobs_jobs_failed_total", reason="poison_input") == BAD_JOBS
    assert worker_total("videojobs_frames_analysed_total", pipeline="yolo") == frames
    assert worker_total("videojobs_job_duration_seconds_count") == n
    assert worker_total("videojobs_job_queue_wait_seconds_count") == n
    assert worker_total("videojobs_stage_seconds_count", stage="detect") == GOOD_JOBS
    assert worker_total("videojobs_stage_seconds_count", stage="store") == GOOD_JOBS
    assert worker_total("videojobs_worker_threads") == 2 and worker_total("videojobs_worker_busy_threads") == 0
    assert total(gateway, "videojobs_http_requests_total", route="/video/submit", status="202") == n
    assert total(gateway, "videojobs_http_requests_total", route="/video/status/{job_id}") >= n
    # bounded labels: no job id (or any UUID) in a label, routes are templates
    for samples in [api, gateway, *workers]:
        for (name, labels), _ in samples.items():
            for key, value in labels:
                assert not UUID.search(value), (name, key, value)
                if key == "route":
                    assert value.startswith("/") or value == "<unmatched>"

    # -- logs: every line JSON, no credential or presigned URL, the job's trace id on each of its lines --
    lines = log_lines(stack)
    records: list[dict] = []
    for name, text_lines in lines.items():
        assert text_lines, name
        for line in text_lines:
            record = json.loads(line)  # raises on a line that is not JSON
            assert {"time", "level", "service", "logger", "message"} <= set(record), line
            for secret in (stack.s3_secret_key, "X-Amz-Signature", "X-Amz-Credential", "Authorization"):
                assert secret not in line, (name, line)
            records.append(record)
    assert {r["service"] for r in records} == {"api", "gateway", "worker"}
    assert any(r["logger"] == "videojobs.gateway.access" for r in records)

    deadline = time.time() + 20
    traces = set()
    for job_id in good + bad:
        job_lines = [r for r in records if r.get("job_id") == job_id]
        trace_ids = {r.get("trace_id") for r in job_lines}
        assert len(trace_ids) == 1 and None not in trace_ids, (job_id, trace_ids)
        statuses = [r.get("status") for r in job_lines if "status" in r]
        assert statuses[0] == "PENDING" and "RUNNING" in statuses and statuses[-1] == final[job_id], statuses
        assert {r["service"] for r in job_lines} == {"api", "worker"}
        outcome = [r for r in job_lines if r.get("status") == final[job_id]][-1]
        assert outcome["duration_seconds"] > 0 and outcome["worker_id"].startswith("worker")
        assert outcome["level"] == ("INFO" if final[job_id] == "COMPLETED" else "WARNING")
        # -- traces: the same trace id in spans of the gateway, the api and a worker ------------
        (trace_id,) = trace_ids
        traces.add(trace_id)
        while True:
            services = {s["service"] for s in receiver.spans if s["trace_id"] == trace_id}
            if services >= {"videojobs-gateway", "videojobs-api", "videojobs-worker"}:
                break
            assert time.time() < deadline, (job_id, services)
            time.sleep(0.3)
        gateway_scopes = {s["scope"] for s in receiver.spans
                          if s["trace_id"] == trace_id and s["service"] == "videojobs-gateway"}
        assert {"opentelemetry.instrumentation.grpc"} < gateway_scopes, gateway_scopes  # REST server span too
        names = {s["name"] for s in receiver.spans if s["trace_id"] == trace_id and s["service"] == "videojobs-worker"}
        assert {"job", "claim", "download", "final write"} <= names, names
        if final[job_id] == "COMPLETED":
            assert {"decode", "detect", "track", "store"} <= names, names
    assert len(traces) == n, "each submit starts a trace of its own"
    worker_ids = {r["worker_id"] for r in records if "worker_id" in r}
    assert worker_ids <= {"worker0-0", "worker1-0"} and worker_ids
