"""Tenants, keys, cancel, delete, idempotency, quotas, webhooks and retention end to end, on embedded defaults
(`videojobs serve` in its own process) and on the production shape (Postgres, NATS JetStream, S3, separate api,
gateway and worker processes), with the real pipeline."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import pytest

from tests.e2e.conftest import SAMPLE, JobsClient, Service, free_port, keys_create
from tests.e2e.test_stack import SHARED_NATS, jobs_table, make_stack, s3_keys
from tests.webhooks import Receiver, verify_standard_webhook
from videojobs.v1 import jobs_pb2

pytestmark = pytest.mark.e2e

LIFECYCLE_ENV = {
    "VIDEOJOBS_AUTH": "keys",
    # Jobs as single units: the cancel test keeps the one worker busy with a long job so that a
    # second job stays PENDING (a split job's segments would let it in between them).
    "VIDEOJOBS_SEGMENT_FRAMES": "0",
    "VIDEOJOBS_API_KEY_PEPPER": "e2e-pepper",
    "VIDEOJOBS_WEBHOOK_ALLOW_PRIVATE": "1",
    "VIDEOJOBS_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "VIDEOJOBS_MAX_ACTIVE_JOBS_PER_TENANT": "3",
    # 20 uploads at once with one idempotency key: room for all of them (the upload bound itself
    # is tested in tests/integration/test_hardening.py).
    "VIDEOJOBS_MAX_CONCURRENT_UPLOADS": "32",
}
LONG = {"pipeline_id": "yolo", "sample_fps": 0, "max_frames": 900}
SHORT = {"pipeline_id": "yolo", "max_frames": 2}


@dataclass
class Shape:
    """One running service and what a test needs to look inside it."""

    name: str
    client: JobsClient
    env: dict[str, str]
    cwd: Path
    objects: Callable[[], list[str]]  # every stored object key
    worker_log: Callable[[], str]
    logs: Callable[[], str]  # everything the service's processes logged
    rows: Callable[[], list[dict]] | None = None
    consumer: Callable[[], dict] | None = None  # JetStream consumer counters

    def key(self, tenant: str) -> dict:
        return keys_create(self.env, tenant, self.cwd)

    def revoke(self, prefix: str) -> None:
        import subprocess

        run = subprocess.run([sys.executable, "-m", "videojobs.cli", "keys", "revoke", prefix], env=self.env,
                             capture_output=True, text=True, timeout=60, cwd=self.cwd)
        assert run.returncode == 0, run.stderr


def _consumer_info(env: dict[str, str]) -> dict:
    async def info() -> dict:
        import nats

        nc = await nats.connect(env["VIDEOJOBS_QUEUE_URL"], connect_timeout=2)
        try:
            c = await nc.jetstream().consumer_info(env["VIDEOJOBS_NATS_STREAM"], env["VIDEOJOBS_NATS_DURABLE"])
            return {"num_pending": c.num_pending, "num_ack_pending": c.num_ack_pending,
                    "num_redelivered": c.num_redelivered}
        finally:
            await nc.close()

    return asyncio.run(info())


@pytest.fixture(scope="module", params=["embedded", "stack"])
def shape(request, tmp_path_factory, model_cache):
    if request.param == "embedded":
        svc = Service(tmp_path_factory.mktemp("lifecycle"), model_cache, **LIFECYCLE_ENV).start()
        storage = svc.data_dir / "storage"
        yield Shape("embedded", JobsClient(svc.http_port, svc.grpc_port), svc.env, svc.data_dir,
                    objects=lambda: sorted(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file()),
                    worker_log=svc.diagnostics, logs=lambda: svc.log.read_text(errors="replace"))
        svc.stop()
        return
    stack = make_stack(tmp_path_factory.mktemp("lifecycle-stack"), "life", **LIFECYCLE_ENV)
    try:
        stack.up(workers=1)
        env = stack.env()
        yield Shape("stack", JobsClient(stack.http_port, stack.grpc_port), env, stack.state_dir,
                    objects=lambda: sorted(s3_keys(stack, "")), worker_log=lambda: stack.tail("worker0", 400),
                    logs=lambda: "\n".join(stack.tail(n, 100_000) for n in ("api", "gateway", "worker0")),
                    rows=lambda: jobs_table(stack), consumer=lambda: _consumer_info(env))
    finally:
        stack.down(timeout=30)
        stack.purge(delete_stream=True)


def wait_until(predicate, timeout=180.0, what=""):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_tenants_see_only_their_own_jobs(shape):
    alpha, beta = shape.key("alpha"), shape.key("beta")
    a, b = shape.client.as_tenant(alpha["key"]), shape.client.as_tenant(beta["key"])
    anonymous = shape.client.as_tenant(None)
    mine = a.submit_rest(SAMPLE, **SHORT)
    theirs = b.submit_grpc(SAMPLE, "yolo", max_frames=2)
    assert a.wait_for(mine)["status"] == "COMPLETED" and b.wait_for(theirs)["status"] == "COMPLETED"
    for client, own, other in ((a, mine, theirs), (b, theirs, mine)):
        assert client.http.get(f"/video/results/{own}").status_code == 200
        for method, path in (("GET", f"/video/status/{other}"), ("GET", f"/video/results/{other}"),
                             ("POST", f"/video/cancel/{other}"), ("DELETE", f"/video/jobs/{other}")):
            r = client.http.request(method, path)
            assert r.status_code == 404 and r.json()["type"] == "/problems/job-not-found", (method, path)
        assert [j["job_id"] for j in client.http.get("/video/jobs").json()["jobs"]] == [own]
        for call, req in ((client.stub.GetStatus, jobs_pb2.GetStatusRequest),
                          (client.stub.GetResults, jobs_pb2.GetResultsRequest),
                          (client.stub.CancelJob, jobs_pb2.CancelJobRequest),
                          (client.stub.DeleteJob, jobs_pb2.DeleteJobRequest)):
            with pytest.raises(grpc.RpcError) as err:
                call(req(job_id=other))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert [j.job_id for j in client.stub.ListJobs(jobs_pb2.ListJobsRequest()).jobs] == [own]
    r = anonymous.http.get(f"/video/status/{mine}")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(grpc.RpcError) as err:
        anonymous.stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=mine))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert anonymous.http.get("/healthz").status_code == 200 and anonymous.http.get("/readyz").status_code == 200
    shape.revoke(beta["prefix"])
    revoked = time.monotonic()
    while b.http.get("/video/jobs").status_code != 401:
        assert time.monotonic() - revoked < 5, "a revoked key still worked after 5 s"
        time.sleep(0.1)
    with pytest.raises(grpc.RpcError) as err:
        b.stub.ListJobs(jobs_pb2.ListJobsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert a.http.get("/video/jobs").status_code == 200
    logs = shape.logs()
    assert f"job {mine}: PENDING (submitted by alpha" in logs  # the logs are the service's
    for made in (alpha, beta):  # neither the key nor its secret part was logged
        assert made["key"].split("_", 2)[2] not in logs  # vjk_<prefix>_<secret>; the secret may hold "_"
    for client in (a, b, anonymous):
        client.close()


def test_cancel_a_running_job_and_a_pending_one(shape):
    a = shape.client.as_tenant(shape.key("canceller")["key"])
    running = a.submit_rest(SAMPLE, **LONG)
    pending = a.submit_rest(SAMPLE, **SHORT)
    queued = a.submit_rest(SAMPLE, **SHORT)
    status = a.wait_for(running, statuses=("RUNNING",))
    while status["frames_done"] == 0:
        status = a.status(running)
    assert a.status(pending)["status"] == "PENDING" and a.status(pending)["queue_position"] == 0
    assert a.status(queued)["queue_position"] == 1
    assert a.http.post(f"/video/cancel/{pending}").json()["status"] == "CANCELLED"
    body = a.http.post(f"/video/cancel/{running}").json()
    assert body["status"] == "CANCELLED", body
    assert a.wait_for(queued)["status"] == "COMPLETED"  # the worker went on with the next job
    final = a.status(running)
    assert final["status"] == "CANCELLED" and final["attempt"] == 1 and final["expires_at"]
    log = shape.worker_log()
    stopped = re.search(rf"job {running}: cancelled during attempt 1; stopped after (\d+) of 900 frames", log)
    assert stopped, log[-3000:]
    print(f"{shape.name}: cancel landed at {status['frames_done']}+ frames; pipeline stopped after "
          f"{stopped.group(1)} of 900")
    assert int(stopped.group(1)) < 900
    assert a.status(pending)["attempt"] == 0 and a.status(pending)["status"] == "CANCELLED"  # it never ran
    assert not [k for k in shape.objects() if k.startswith(f"results/{running}") or k.startswith(f"results/{pending}")]
    r = a.http.post(f"/video/cancel/{running}")
    assert r.status_code == 409 and r.json()["job_status"] == "CANCELLED"
    if shape.consumer is not None:
        time.sleep(2)  # any redelivery would show by now (AckWait is 30 s, so also check the counters)
        counters = shape.consumer()
        assert counters == {"num_pending": 0, "num_ack_pending": 0, "num_redelivered": 0}, counters
        rows = {r["job_id"]: r for r in shape.rows()}
        assert rows[running]["attempt"] == 1 and rows[pending]["attempt"] == 0
    a.close()


def test_delete_leaves_nothing_of_the_job_in_storage(shape):
    a = shape.client.as_tenant(shape.key("deleter")["key"])
    done = a.submit_rest(SAMPLE, **SHORT)
    finished = a.wait_for(done)
    assert finished["status"] == "COMPLETED"
    running = a.submit_grpc(SAMPLE, "yolo", sample_fps=0, max_frames=900)
    a.wait_for(running, statuses=("RUNNING",))
    stored = {k for k in shape.objects() if done in k}
    images = {k for k in stored if k.startswith(f"frames/{done}/") and k.endswith(".jpg")}
    assert stored - images == {f"inputs/{done}.mp4", f"results/{done}.json"}
    assert len(images) == finished["frames_total"] > 0  # the viewer's frame images: one per analysed frame
    assert a.http.delete(f"/video/jobs/{done}").status_code == 204
    a.stub.DeleteJob(jobs_pb2.DeleteJobRequest(job_id=running))  # cancels it first
    for job_id in (done, running):
        assert a.http.get(f"/video/status/{job_id}").status_code == 404
    # the worker notices the cancel at its next batch and removes anything it wrote (frame images)
    deadline = time.monotonic() + 30
    while (left := [k for k in shape.objects() if done in k or running in k]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == []
    if shape.rows is not None:
        assert not {r["job_id"] for r in shape.rows()} & {done, running}
    a.close()


def test_idempotent_submits_and_the_active_job_quota(shape, tmp_path):
    a = shape.client.as_tenant(shape.key("retrier")["key"])
    inputs_before = {k for k in shape.objects() if k.startswith("inputs/")}

    def submit(_):
        with open(SAMPLE, "rb") as f:
            return a.http.post("/video/submit", files={"file": ("v.mp4", f, "video/mp4")},
                               data={"pipeline_id": "yolo", "max_frames": "2"}, headers={"Idempotency-Key": "k-1"})

    with ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(submit, range(20)))
    assert [r.status_code for r in replies] == [202] * 20
    ids = {r.json()["job_id"] for r in replies}
    assert len(ids) == 1
    job_id = ids.pop()
    new_inputs = {k for k in shape.objects() if k.startswith("inputs/")} - inputs_before
    assert new_inputs <= {f"inputs/{job_id}.mp4"}  # the other 19 uploads left nothing (it may have expired)
    other = tmp_path / "other.mp4"
    other.write_bytes(SAMPLE.read_bytes()[:-1] + b"\x00")
    with open(other, "rb") as f:
        r = a.http.post("/video/submit", files={"file": ("v.mp4", f, "video/mp4")},
                        data={"pipeline_id": "yolo", "max_frames": "2"}, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 409 and r.json()["job_id"] == job_id

    q = shape.client.as_tenant(shape.key("quota")["key"])
    held = [q.submit_rest(SAMPLE, **LONG) for _ in range(3)]  # the limit is 3 PENDING + RUNNING
    before = shape.objects()
    r = q.http.post("/video/submit", files={"file": ("v.mp4", SAMPLE.read_bytes(), "video/mp4")})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
    assert shape.objects() == before
    for job_id in held:
        q.http.post(f"/video/cancel/{job_id}")
    a.close()
    q.close()


def test_signed_webhooks_one_success_per_final_state(shape, tmp_path):
    tenant = shape.key("hooked")
    a = shape.client.as_tenant(tenant["key"])
    receiver = Receiver(fail_first=3, fail_code=503, ok_code=200)
    try:
        completed = a.submit_rest(SAMPLE, callback_url=receiver.url, **SHORT)
        truncated = tmp_path / "truncated.mp4"
        truncated.write_bytes(SAMPLE.read_bytes()[:30_000])
        failed = a.submit_rest(truncated, callback_url=receiver.url)
        cancelled = a.submit_rest(SAMPLE, callback_url=receiver.url, **SHORT)
        a.http.post(f"/video/cancel/{cancelled}")
        wait_until(lambda: len(receiver.delivered()) == 3, what="three delivered notices")
        time.sleep(2)
        events = {e["data"]["job_id"]: e["data"]["status"] for e in receiver.delivered()}
        assert len(receiver.delivered()) == 3 and events[completed] == "COMPLETED" and events[failed] == "FAILED"
        assert events[cancelled] in ("CANCELLED", "COMPLETED")  # the cancel may lose the race to a short job
        assert len(receiver.requests) == 6
        for headers, body, _ in receiver.requests:
            verify_standard_webhook(tenant["webhook_secret"], headers, body)
        r = a.http.post("/video/submit", files={"file": ("v.mp4", SAMPLE.read_bytes(), "video/mp4")},
                        data={"callback_url": "http://169.254.169.254/"})
        assert r.status_code == 422 and r.json()["type"] == "/problems/invalid-callback-url"
    finally:
        receiver.close()
        a.close()


def test_a_notice_is_delivered_after_an_api_restart(tmp_path, model_cache):
    """Production shape: the worker finishes the job while the api is down; the restarted api delivers."""
    stack = make_stack(tmp_path, "restart", **LIFECYCLE_ENV)
    receiver = Receiver(fail_first=0)
    try:
        stack.up(workers=1)
        tenant = keys_create(stack.env(), "restarter", stack.state_dir)
        client = JobsClient(stack.http_port, stack.grpc_port, tenant["key"])
        job_id = client.submit_rest(SAMPLE, callback_url=receiver.url, pipeline_id="yolo", max_frames=60)
        client.wait_for(job_id, statuses=("RUNNING",))
        api = stack.procs["api"]
        api.send_signal(signal.SIGTERM)
        api.wait(60)
        wait_until(lambda: next(r for r in jobs_table(stack) if r["job_id"] == job_id)["status"] == "COMPLETED",
                   what="the worker to finish while the api is down")
        assert receiver.requests == []
        stack.start_api()
        stack.wait_ready("api", 120)
        wait_until(lambda: len(receiver.delivered()) == 1, what="the notice after the restart")
        verify_standard_webhook(tenant["webhook_secret"], *receiver.requests[0][:2])
        data = receiver.delivered()[0]["data"]
        assert (data["job_id"], data["status"], data["results_url"]) == (job_id, "COMPLETED",
                                                                          f"/video/results/{job_id}")
        client.close()
    finally:
        receiver.close()
        stack.down(timeout=30)
        stack.purge(delete_stream=stack.nats_url == SHARED_NATS)


def test_retention_with_two_api_processes_removes_each_expired_job_once(tmp_path):
    """Tiny retention, two api replicas sweeping the same Postgres and bucket at once, no workers needed:
    cancelled jobs are final at once."""
    stack = make_stack(tmp_path, "retention", VIDEOJOBS_AUTH="keys", VIDEOJOBS_API_KEY_PEPPER="p",
                       VIDEOJOBS_INPUT_RETENTION_HOURS="0.0003", VIDEOJOBS_RETENTION_HOURS="0.0006",
                       VIDEOJOBS_SWEEP_INTERVAL_SECONDS="0.3", VIDEOJOBS_SWEEP_BATCH_SIZE="3")
    try:
        stack.up(workers=0)
        stack._spawn("api2", [sys.executable, "-m", "videojobs.cli", "api"],
                     env={**stack.env(), "VIDEOJOBS_GRPC_PORT": str(free_port())})
        tenant = keys_create(stack.env(), "keeper", stack.state_dir)
        client = JobsClient(stack.http_port, stack.grpc_port, tenant["key"])
        keep = client.submit_rest(SAMPLE, **LONG)  # stays PENDING (no workers): never expires
        expired = []
        for _ in range(12):
            job_id = client.submit_rest(SAMPLE, **SHORT)
            client.http.post(f"/video/cancel/{job_id}")
            expired.append(job_id)
            assert client.status(job_id)["expires_at"]
        wait_until(lambda: not {r["job_id"] for r in jobs_table(stack)} & set(expired), timeout=120,
                   what="the sweepers to remove the expired jobs")
        assert {r["job_id"] for r in jobs_table(stack)} == {keep}
        assert s3_keys(stack, "") == [f"inputs/{keep}.mp4"]
        time.sleep(1)
        logs = stack.tail("api", 2000) + stack.tail("api2", 2000)
        removed = sum(int(n) for n in re.findall(r"retention: removed \d+ input\(s\) and (\d+) job\(s\)", logs))
        assert removed == len(expired), logs[-3000:]  # no job was removed twice
        assert "retention pass failed" not in logs and "Traceback" not in logs
        assert "retention" in stack.tail("api2", 2000) or "retention" in stack.tail("api", 2000)
        client.close()
    finally:
        stack.down(timeout=30)
        stack.purge(delete_stream=True)
