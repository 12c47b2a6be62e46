"""End to end on the production shape (Postgres, NATS JetStream, S3, worker processes): a long job in
segments survives a SIGKILLed worker with at most one segment of lost work, and a rolling restart of
every worker re-runs only the unfinished segments; the merged results equal one `videojobs analyze`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import MODEL, SAMPLE, JobsClient
from tests.e2e.test_stack import PG, ROOT, SHARED_NATS, make_stack

pytestmark = pytest.mark.e2e

# 399 sampled frames of the 40 s sample: 5 segments, each long enough (1-2 s) to be caught part-way
# (progress is written every 0.5 s) now that decoding skips what sampling skips.
SEGMENT_FRAMES = 80
OPTIONS = {"pipeline_id": "yolo", "sample_fps": 10}
# A results cache of 64 KiB: the merged documents (over 16 KiB) are answered as a long job's are, their
# pages read from S3 by range.
FAST_LEASES = dict(VIDEOJOBS_SEGMENT_FRAMES=SEGMENT_FRAMES, VIDEOJOBS_INFERENCE_THREADS=1,
                   VIDEOJOBS_ACK_WAIT_SECONDS=4, VIDEOJOBS_LEASE_SECONDS=4, VIDEOJOBS_HEARTBEAT_SECONDS=1,
                   VIDEOJOBS_FRAME_IMAGE_MAX_SIDE=0, VIDEOJOBS_RESULTS_CACHE_BYTES=64 * 1024)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, model_cache):
    """One stack (2 workers) for both scenarios: starting one takes a while."""
    made = make_stack(tmp_path_factory.mktemp("segstack"), "segments", VIDEOJOBS_MODEL_CACHE_DIR=model_cache,
                      **FAST_LEASES)
    made.up(workers=2)
    yield made
    made.down(timeout=30)
    made.purge(delete_stream=made.nats_url == SHARED_NATS)


def segments_table(stack, job_id: str) -> list[dict]:
    env = stack.env()
    engine = sa.create_engine(PG, connect_args={"options": f"-csearch_path={env['VIDEOJOBS_DATABASE_SCHEMA']}"})
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text(
            "select * from segments where job_id = :j order by segment_index"), {"j": job_id}).mappings()]
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> str:
    """One converted model for the module's stacks and the single pass (conversion takes seconds)."""
    return str(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def single_pass(model_cache) -> dict:
    """`videojobs analyze` on the same file, options and model."""
    run = subprocess.run([sys.executable, "-m", "videojobs.cli", "analyze", str(SAMPLE), "--pipeline", "yolo",
                          "--sample-fps", str(OPTIONS["sample_fps"]), "--model", str(MODEL), "--no-progress"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0",
                              "VIDEOJOBS_MODEL_CACHE_DIR": model_cache})
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def merged_document(client: JobsClient, job_id: str) -> dict:
    body = client.http.get(f"/video/results/{job_id}", params={"page_size": 1000}).json()
    assert body["next_page_token"] == ""
    assert len(json.dumps(body["results"])) > 16 * 1024  # longer than a quarter of the api's results cache
    return body


def wait_until(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_job_costs_at_most_one_segment_and_results_equal_one_pass(stack, single_pass):
    client = JobsClient(stack.http_port, stack.grpc_port)
    job_id = client.submit_rest(SAMPLE, **OPTIONS)

    def running_after_half():
        rows = segments_table(stack, job_id)
        done = sum(r["status"] == "DONE" for r in rows)
        running = [r for r in rows if r["status"] == "RUNNING" and r["frames_done"] > 0]
        return running[0] if rows and done >= 2 and running else None

    victim_row = wait_until(running_after_half, 120, "about half the segments done")
    holder = victim_row["worker_id"].split("-")[0]
    victim = stack.procs[holder]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)

    status = client.wait_for(job_id, timeout=180)
    assert status["status"] == "COMPLETED", (status, stack.tail("worker0"), stack.tail("worker1"))
    assert status["segments_total"] == 5 and status["segments_done"] == 5
    assert 0 < status["frames_recomputed"] <= SEGMENT_FRAMES
    rows = segments_table(stack, job_id)
    assert sum(r["attempt"] > 1 for r in rows) <= 1  # only the killed worker's segment ran again
    doc = merged_document(client, job_id)
    assert json.dumps(doc["results"]) == json.dumps(single_pass["results"])
    assert json.dumps(doc["tracks"]) == json.dumps(single_pass["tracks"])
    assert doc["sampling"]["segments"] == 5
    # back to two workers for the next scenario, once the new process can take a signal
    log = stack.state_dir / f"{holder}.log"
    starts = log.read_text(errors="replace").count("worker started")
    stack.start_worker(int(holder.removeprefix("worker")))
    wait_until(lambda: log.read_text(errors="replace").count("worker started") > starts, 120, f"{holder} restarted")
    client.close()


def test_sigterm_to_every_worker_then_restart_reruns_only_unfinished_segments(stack, single_pass):
    client = JobsClient(stack.http_port, stack.grpc_port)
    job_id = client.submit_rest(SAMPLE, **OPTIONS)
    wait_until(lambda: sum(r["status"] == "DONE" for r in segments_table(stack, job_id)) >= 1
               and any(r["status"] == "RUNNING" for r in segments_table(stack, job_id)), 120, "a segment done")
    workers = [name for name in stack.procs if name.startswith("worker")]
    for name in workers:  # a rolling deploy: every worker told to stop at once
        os.killpg(stack.procs[name].pid, signal.SIGTERM)
    for name in workers:
        assert stack.procs[name].wait(60) == 0
    before = {r["segment_index"]: r for r in segments_table(stack, job_id)}
    assert not any(r["status"] == "RUNNING" for r in before.values())  # handed back, not left to a lease
    finished_before = {i for i, r in before.items() if r["status"] == "DONE"}
    assert finished_before and len(finished_before) < 5
    for i in range(len(workers)):
        stack.start_worker(i)
    status = client.wait_for(job_id, timeout=180)
    assert status["status"] == "COMPLETED", (status, stack.tail("worker0"))
    after = {r["segment_index"]: r for r in segments_table(stack, job_id)}
    for i in finished_before:  # finished segments never ran again
        assert after[i]["attempt"] == before[i]["attempt"] == 1 and after[i]["crashes"] == 0
    assert all(r["crashes"] == 0 for r in after.values())  # hand-backs are not crashes
    assert status["frames_recomputed"] == sum(r["frames_recomputed"] for r in after.values())
    assert status["frames_recomputed"] <= SEGMENT_FRAMES * (5 - len(finished_before))
    doc = merged_document(client, job_id)
    assert json.dumps(doc["results"]) == json.dumps(single_pass["results"])
    assert json.dumps(doc["tracks"]) == json.dumps(single_pass["tracks"])
    client.close()
