"""End to end on the production shape: Postgres, NATS JetStream, S3 (moto) and separate worker processes."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import sys
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import MODEL, SAMPLE, JobsClient, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("stack", ROOT / "scripts" / "stack.py")
stack_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = stack_module  # dataclasses look their module up
_spec.loader.exec_module(stack_module)

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NATS_SERVER = "/usr/sbin/nats-server"
SHARED_NATS = "nats://127.0.0.1:4222"


def make_stack(tmp_path: Path, name: str, nats_url: str = SHARED_NATS, **env):
    return stack_module.Stack(
        state_dir=tmp_path / "stack", name=f"{name}_{uuid.uuid4().hex[:8]}", database_url=PG, nats_url=nats_url,
        model=str(MODEL), http_port=free_port(), grpc_port=free_port(),
        extra_env={k: str(v) for k, v in env.items()},
    )


def jobs_table(stack) -> list[dict]:
    env = stack.env()
    engine = sa.create_engine(PG, connect_args={"options": f"-csearch_path={env['VIDEOJOBS_DATABASE_SCHEMA']}"})
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text("select * from jobs")).mappings()]
    engine.dispose()
    return rows


def s3_keys(stack, prefix: str) -> list[str]:
    from minio import Minio

    env = stack.env()
    client = Minio(env["VIDEOJOBS_S3_ENDPOINT"], access_key="testing", secret_key="testing", secure=False)
    bucket = env["VIDEOJOBS_STORAGE_URL"].removeprefix("s3://")
    return [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)]


@pytest.fixture
def stack_factory(tmp_path):
    made = []

    def make(*args, **kwargs):
        stack = make_stack(tmp_path, *args, **kwargs)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.down(timeout=30)
        # a private NATS server took its streams with it
        stack.purge(delete_stream=stack.nats_url == SHARED_NATS)


def test_thirty_jobs_over_three_workers(stack_factory):
    stack = stack_factory("spread")
    stack.up(workers=3)
    client = JobsClient(stack.http_port, stack.grpc_port)
    with ThreadPoolExecutor(4) as pool:
        rest = [pool.submit(client.submit_rest, SAMPLE, pipeline_id="yolo", max_frames=2) for _ in range(15)]
        rpc = [pool.submit(client.submit_grpc, SAMPLE, "yolo", max_frames=2) for _ in range(15)]
        ids = [f.result() for f in rest + rpc]
    assert len(set(ids)) == 30
    statuses = [client.wait_for(job_id) for job_id in ids]
    assert [s["status"] for s in statuses] == ["COMPLETED"] * 30, [s for s in statuses if s["status"] != "COMPLETED"]
    rows = jobs_table(stack)
    assert len(rows) == 30 and all(r["attempt"] == 1 for r in rows)  # each job ran once
    assert sorted(s3_keys(stack, "results/")) == sorted(f"results/{i}.json" for i in ids)  # stored once each
    workers = {r["worker_id"].split("-")[0] for r in rows}
    assert len(workers) > 1, f"all jobs ran on {workers}"
    body = client.http.get(f"/video/results/{ids[0]}").json()
    assert len(body["results"]) == 2 and body["results"][0]["result"]["detections"]
    client.close()


def test_job_submitted_while_nats_is_down_completes_when_it_is_back(stack_factory, tmp_path):
    port = free_port()
    store = tmp_path / "nats-store"

    def start_nats():
        return subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    nats = start_nats()
    try:
        time.sleep(0.5)
        stack = stack_factory("natsdown", nats_url=f"nats://127.0.0.1:{port}")
        stack.up(workers=1)
        client = JobsClient(stack.http_port, stack.grpc_port)
        nats.send_signal(signal.SIGTERM)
        nats.wait(10)
        job_id = client.submit_rest(SAMPLE, pipeline_id="yolo", max_frames=2)  # accepted: row + outbox committed
        time.sleep(3)
        assert client.status(job_id)["status"] == "PENDING"
        nats = start_nats()
        status = client.wait_for(job_id, timeout=120)
        assert status["status"] == "COMPLETED", (status, stack.tail("api"), stack.tail("worker0"))
        client.close()
    finally:
        nats.kill()
        nats.wait()


def test_killed_worker_job_completes_on_another_after_the_lease(stack_factory):
    # One job as one unit (no segments: tests/e2e/test_segments.py kills a worker of a split job).
    stack = stack_factory("sigkill", VIDEOJOBS_ACK_WAIT_SECONDS=4, VIDEOJOBS_LEASE_SECONDS=4,
                          VIDEOJOBS_HEARTBEAT_SECONDS=1, VIDEOJOBS_SEGMENT_FRAMES="0")
    stack.up(workers=2)
    client = JobsClient(stack.http_port, stack.grpc_port)
    job_id = client.submit_rest(SAMPLE, pipeline_id="yolo", sample_fps=0, max_frames=200)
    status = client.wait_for(job_id, statuses=("RUNNING",), timeout=60)
    assert status["status"] == "RUNNING"
    while client.status(job_id)["frames_done"] == 0:
        time.sleep(0.1)
    holder = next(r for r in jobs_table(stack) if r["job_id"] == job_id)["worker_id"].split("-")[0]
    victim = stack.procs[holder]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    status = client.wait_for(job_id, timeout=180)
    row = next(r for r in jobs_table(stack) if r["job_id"] == job_id)
    assert status["status"] == "COMPLETED" and row["attempt"] == 2 and not row["worker_id"].startswith(holder)
    assert len(client.http.get(f"/video/results/{job_id}").json()["results"]) == 200
    client.close()


def test_poison_file_fails_after_one_attempt(stack_factory, tmp_path):
    stack = stack_factory("poison")
    stack.up(workers=1)
    client = JobsClient(stack.http_port, stack.grpc_port)
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(SAMPLE.read_bytes()[:30_000])
    job_id = client.submit_rest(bad)
    status = client.wait_for(job_id, timeout=60)
    assert status["status"] == "FAILED" and status["attempt"] == 1 and status["error_message"]
    time.sleep(2)  # a redelivery would have bumped the attempt
    assert client.status(job_id)["attempt"] == 1
    client.close()


def test_a_stack_that_fails_to_come_up_leaves_no_process_behind(stack_factory):
    # The gateway cannot listen (its port is held here): `up` fails after S3 and the API have started,
    # and takes them down again instead of leaving them running after the error.
    stack = stack_factory("halfup")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", stack.http_port))
        holder.listen()
        with pytest.raises(RuntimeError, match="gateway exited"):
            stack.up(workers=1, timeout=60)
    started = dict(stack.procs)
    assert {"s3", "api", "gateway"} <= set(started), started
    assert all(proc.poll() is not None for proc in started.values()), started
    assert stack.status() == {}  # no pid file left: `make up` can start afresh
