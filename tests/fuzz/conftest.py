"""The api, a worker (fake analyzer) and the REST gateway in this process, for the fuzzers.

One stack per session: the gRPC api on embedded adapters with API keys on, a worker
thread that finishes jobs quickly, and the gateway behind real uvicorn (the fuzzers
speak real HTTP and real gRPC to them). Example counts come from ``FUZZ_EXAMPLES``
(``make fuzz`` raises them); every request is counted, and the totals (requests, 5xx,
INTERNAL/UNKNOWN answers) are printed at the end and written to var/fuzz.json.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn

from tests.e2e.conftest import free_port
from tests.fakes import FakeAnalyzer
from videojobs.api.bootstrap import build_api
from videojobs.api.keys import create_key
from videojobs.common.adapters.factory import make_capability_store, make_tenant_store
from videojobs.common.config import Settings
from videojobs.common.frames import FrameImageStore
from videojobs.gateway.app import create_app
from videojobs.gateway.bootstrap import server_config
from videojobs.worker.frames import FrameImageWriter
from videojobs.worker.worker import JobWorker, WorkerPolicy

REPO = Path(__file__).resolve().parents[2]
# The smallest upload the gateway accepts as a video: an ISO-BMFF `ftyp` box (the worker here is fake).
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00\x00\x00\x08free" * 6


def examples(default: int) -> int:
    """Hypothesis examples per fuzz target: FUZZ_EXAMPLES if set (make fuzz), else the CI-sized default."""
    return int(os.environ.get("FUZZ_EXAMPLES") or default)


class Tally:
    """Requests the fuzzers sent and how they were answered."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.server_errors: list[str] = []
        self._lock = threading.Lock()

    def http(self, target: str, status: int, what: str = "") -> None:
        with self._lock:
            self.requests[target] += 1
            self.answers[f"{target} {status // 100}xx"] += 1
            if status >= 500:
                self.server_errors.append(f"{target}: {status} {what}"[:500])

    def rpc(self, target: str, code: grpc.StatusCode, what: str = "") -> None:
        with self._lock:
            self.requests[target] += 1
            self.answers[f"{target} {code.name}"] += 1
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DATA_LOSS):
                self.server_errors.append(f"{target}: {code.name} {what}"[:500])

    def report(self) -> dict:
        return {"requests": sum(self.requests.values()), "server_errors": len(self.server_errors),
                "by_target": dict(self.requests), "answers": dict(sorted(self.answers.items())),
                "server_error_samples": self.server_errors[:20]}


TALLY = Tally()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    if not TALLY.requests:
        return
    report = TALLY.report()
    terminalreporter.write_sep("-", "fuzz totals")
    for target, count in sorted(report["by_target"].items()):
        terminalreporter.write_line(f"  {target:<28} {count:>7} requests")
    terminalreporter.write_line(f"fuzz totals: {report['requests']} requests, {report['server_errors']} server errors "
                                f"(5xx / INTERNAL / UNKNOWN)")
    out = REPO / "var" / "fuzz.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


class FuzzStack:
    def __init__(self, api, base_url: str, key: str) -> None:
        self.api = api
        self.base_url = base_url
        self.key = key
        self.headers = {"Authorization": f"Bearer {key}"}
        self.grpc_target = f"127.0.0.1:{api.port}"
        self.http = httpx.Client(base_url=base_url, timeout=30, headers=self.headers)
        self._job = ""

    def submit(self) -> str:
        r = self.http.post("/video/submit", files={"file": ("a.mp4", MP4_HEAD, "video/mp4")}, data={"pipeline_id": "yolo"})
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def real_job(self) -> str:
        """A COMPLETED job of the fuzzing tenant (made once)."""
        if not self._job:
            self._job = self.submit()
            assert self.wait_final(self._job)["status"] == "COMPLETED"
        return self._job

    def wait_final(self, job_id: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.http.get(f"/video/status/{job_id}").json()
            if body["status"] in ("COMPLETED", "FAILED", "CANCELLED") or time.monotonic() > deadline:
                return body
            time.sleep(0.05)


@pytest.fixture(scope="session")
def fuzz_stack(tmp_path_factory):
    """api (API keys on) + fake worker + gateway on uvicorn; yields a FuzzStack with a valid key."""
    data_dir = tmp_path_factory.mktemp("fuzz")
    settings = Settings(data_dir=data_dir, grpc_port=0, auth="keys", max_upload_bytes=4 * 1024 * 1024,
                        upload_idle_timeout_seconds=5, upload_total_timeout_seconds=30, max_concurrent_uploads=8,
                        max_active_jobs_per_tenant=0, max_queued_jobs=0)
    api = build_api(settings)
    api.start()
    key = create_key(make_tenant_store(api.repo), "fuzz", "fuzzer", settings.api_key_pepper)["key"]
    analyzer = FakeAnalyzer(frames=3, size=(64, 48))
    worker = JobWorker(api.queue, api.storage, api.repo, analyzer,
                       WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=1, idle_backoff_max=0.05),
                       capabilities=make_capability_store(api.repo),
                       frame_images=FrameImageWriter(FrameImageStore(api.storage), max_side=320))
    worker_thread = threading.Thread(target=worker.run_forever, daemon=True)
    worker_thread.start()
    port = free_port()
    server = uvicorn.Server(server_config(create_app(settings, f"127.0.0.1:{api.port}"), settings, log_level="critical",
                                          host="127.0.0.1", port=port))
    server_thread = threading.Thread(target=server.run, daemon=True)
    server_thread.start()
    while not server.started:
        time.sleep(0.05)
    stack = FuzzStack(api, f"http://127.0.0.1:{port}", key)
    yield stack
    stack.http.close()
    worker.request_stop()
    worker_thread.join(10)
    server.should_exit = True
    server_thread.join(10)
    api.stop(grace=0)
