"""Run `videojobs serve` as a separate process on embedded defaults and talk to it over REST and gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import load_script
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("VIDEOJOBS_SHARED_DIR", REPO.parent / "shared"))
SAMPLE = SHARED / "media" / "bottle-detection.mp4"
MODEL = SHARED / "models" / "yolov8n.pt"


free_port = load_script("servers").free_port


class _KeyMetadata(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Adds `authorization: Bearer KEY` to every call."""

    def __init__(self, key: str) -> None:
        self._metadata = (("authorization", f"Bearer {key}"),)

    def _details(self, details):
        return details._replace(metadata=tuple(details.metadata or ()) + self._metadata)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def keys_create(env: dict[str, str], tenant: str, cwd: Path) -> dict:
    """`videojobs keys create --tenant TENANT --json` against the service's database."""
    run = subprocess.run([sys.executable, "-m", "videojobs.cli", "keys", "create", "--tenant", tenant, "--json"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


class JobsClient:
    """REST and gRPC client of a running videojobs (embedded or the stack), with an API key if given."""

    def __init__(self, http_port: int, grpc_port: int, key: str | None = None) -> None:
        self.http_port, self.grpc_port = http_port, grpc_port
        self.key = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60, headers=headers)
        self._channel: grpc.Channel | None = None

    def as_tenant(self, key: str | None) -> "JobsClient":
        """Another client of the same service, acting with `key`."""
        return JobsClient(self.http_port, self.grpc_port, key)

    @property
    def stub(self) -> jobs_pb2_grpc.JobServiceStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
            if self.key:
                self._channel = grpc.intercept_channel(self._channel, _KeyMetadata(self.key))
        return jobs_pb2_grpc.JobServiceStub(self._channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def submit_rest(self, path: Path = SAMPLE, **fields) -> str:
        with open(path, "rb") as f:
            r = self.http.post("/video/submit", files={"file": (path.name, f, "video/mp4")},
                               data={k: str(v) for k, v in fields.items()})
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def submit_grpc(self, path: Path = SAMPLE, pipeline_id: str = "yolo_ocr", **options) -> str:
        def messages():
            yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(
                pipeline_id=pipeline_id, options=jobs_pb2.AnalysisOptions(**options), filename=path.name))
            with open(path, "rb") as f:
                while chunk := f.read(256 * 1024):
                    yield jobs_pb2.SubmitRequest(chunk=chunk)
        return self.stub.Submit(messages()).job_id

    def grpc_status(self, job_id: str):
        return self.stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id)).job

    def status(self, job_id: str) -> dict:
        r = self.http.get(f"/video/status/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_for(self, job_id: str, statuses=("COMPLETED", "FAILED"), timeout: float = 300) -> dict:
        deadline = time.time() + timeout
        while True:
            status = self.status(job_id)
            if status["status"] in statuses:
                return status
            if time.time() > deadline:
                raise AssertionError(f"job {job_id} not {statuses} in {timeout}s: {status}\n{self.diagnostics()}")
            time.sleep(0.2)

    def diagnostics(self) -> str:
        return ""


class Service(JobsClient):
    """One `videojobs serve` process; restartable on the same data folder."""

    def __init__(self, data_dir: Path, model_cache: Path, **extra_env: str) -> None:
        super().__init__(free_port(), free_port())
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "VIDEOJOBS_DATA_DIR": str(data_dir),
            "VIDEOJOBS_MODEL": str(MODEL),
            "VIDEOJOBS_MODEL_CACHE_DIR": str(model_cache),
            "VIDEOJOBS_HTTP_PORT": str(self.http_port),
            "VIDEOJOBS_GRPC_PORT": str(self.grpc_port),
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "0",
            "OMP_THREAD_LIMIT": "1",
            **extra_env,
        }
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / "serve.log"

    def start(self, timeout: float = 120) -> "Service":
        log = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "videojobs.cli", "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.data_dir,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"service exited early:\n{self.diagnostics()}"
            try:
                if self.http.get("/readyz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"service not ready in {timeout}s:\n{self.diagnostics()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.close()
        return code

    def diagnostics(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    assert MODEL.is_file(), f"detector model missing at {MODEL} (see ../shared/models/README.md)"
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture
def service_factory(tmp_path, model_cache):
    started: list[Service] = []

    def make(**extra_env: str) -> Service:
        svc = Service(tmp_path, model_cache, **extra_env)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        if svc.proc and svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait()
