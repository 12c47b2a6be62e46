"""Tenants, keys, list, cancel, delete, idempotency, quotas and webhooks on the real api (SQLite, local folder,
in-process queue) over gRPC and the REST gateway, with a fake analyzer in a worker thread."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from fastapi.testclient import TestClient

from tests.fakes import FakeAnalyzer
from tests.integration.conftest import MAX_UPLOAD, SAMPLE
from tests.webhooks import Receiver, verify_standard_webhook
from videojobs.api.bootstrap import build_api
from videojobs.api.keys import create_key
from videojobs.common.adapters.factory import make_capability_store, make_tenant_store, make_webhook_outbox
from videojobs.common.config import Settings
from videojobs.gateway.app import create_app
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc
from videojobs.worker.worker import JobWorker, WorkerPolicy

PEPPER = "test-pepper"
OTHER = SAMPLE.read_bytes()[:-1] + b"\x01"  # same container, different bytes


def settings_for(tmp_path, **extra) -> Settings:
    values = dict(data_dir=tmp_path, grpc_port=0, max_upload_bytes=MAX_UPLOAD, auth="keys", api_key_pepper=PEPPER,
                  webhook_allow_private=True, webhook_retry_base_seconds=0.2)
    return Settings(**{**values, **extra})


@pytest.fixture
def make_api(tmp_path):
    started = []

    def make(**extra):
        api = build_api(settings_for(tmp_path, **extra))
        api.start()
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop(grace=0)


@pytest.fixture
def api(make_api):
    return make_api()


@pytest.fixture
def keys(api):
    store = make_tenant_store(api.repo)
    return {name: create_key(store, name, "", PEPPER) for name in ("alpha", "beta")}


@pytest.fixture
def rest(api):
    app = create_app(Settings(max_upload_bytes=MAX_UPLOAD, upload_chunk_bytes=64 * 1024), f"127.0.0.1:{api.port}")
    with TestClient(app) as client:
        yield client


@pytest.fixture
def channel(api):
    ch = grpc.insecure_channel(f"127.0.0.1:{api.port}")
    yield ch
    ch.close()


def start_worker(api, analyzer):
    worker = JobWorker(api.queue, api.storage, api.repo, analyzer,
                       WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=0.5, idle_backoff_max=0.05),
                       capabilities=make_capability_store(api.repo))
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    return worker, thread


@pytest.fixture
def worker(api):
    analyzer = FakeAnalyzer(frames=5)
    w, thread = start_worker(api, analyzer)
    w.analyzer = analyzer
    yield w
    w.request_stop()
    thread.join(10)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(rest, key, data=None, headers=None, **fields):
    return rest.post("/video/submit", files={"file": ("clip.mp4", data or SAMPLE.read_bytes(), "video/mp4")},
                     data={k: str(v) for k, v in fields.items()}, headers={**auth(key), **(headers or {})})


def submitted(rest, key, **fields) -> str:
    r = submit(rest, key, **fields)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def wait_status(rest, key, job_id, statuses, timeout=20.0) -> dict:
    deadline = time.time() + timeout
    while True:
        body = rest.get(f"/video/status/{job_id}", headers=auth(key)).json()
        if body["status"] in statuses:
            return body
        assert time.time() < deadline, body
        time.sleep(0.05)


def stored_files(api) -> list[str]:
    return sorted(str(p.relative_to(api.storage.root)) for p in api.storage.root.rglob("*") if p.is_file())


# -- keys and tenants ---------------------------------------------------------------------------------
def test_no_key_bad_key_and_revoked_key_are_401(api, rest, keys, channel):
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    for headers in ({}, {"Authorization": "Bearer vjk_nope"}, {"Authorization": "Basic abc"},
                    auth(keys["alpha"]["key"][:-2] + "xx")):
        r = rest.get("/video/jobs", headers=headers)
        assert r.status_code == 401 and r.json()["type"] == "/problems/unauthenticated", r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(grpc.RpcError) as err:
        stub.ListJobs(jobs_pb2.ListJobsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rest.get("/healthz").status_code == 200 and rest.get("/readyz").status_code == 200

    key = keys["alpha"]
    assert rest.get("/video/jobs", headers=auth(key["key"])).status_code == 200
    assert make_tenant_store(api.repo).revoke_key(key["prefix"])
    revoked_at = time.monotonic()
    while rest.get("/video/jobs", headers=auth(key["key"])).status_code == 200:
        assert time.monotonic() - revoked_at < 5, "a revoked key kept working for 5 s"
        time.sleep(0.1)
    assert rest.get("/video/jobs", headers=auth(keys["beta"]["key"])).status_code == 200


def test_another_tenants_job_is_404_everywhere(api, rest, keys, channel):
    a, b = keys["alpha"]["key"], keys["beta"]["key"]
    job_id = submitted(rest, a)
    for method, path in (("GET", f"/video/status/{job_id}"), ("GET", f"/video/results/{job_id}"),
                         ("POST", f"/video/cancel/{job_id}"), ("DELETE", f"/video/jobs/{job_id}")):
        r = rest.request(method, path, headers=auth(b))
        assert r.status_code == 404 and r.json()["type"] == "/problems/job-not-found", (method, path, r.text)
    assert rest.get("/video/jobs", headers=auth(b)).json()["jobs"] == []
    assert [j["job_id"] for j in rest.get("/video/jobs", headers=auth(a)).json()["jobs"]] == [job_id]
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    md = (("authorization", f"Bearer {b}"),)
    for call, request in ((stub.GetStatus, jobs_pb2.GetStatusRequest), (stub.GetResults, jobs_pb2.GetResultsRequest),
                          (stub.CancelJob, jobs_pb2.CancelJobRequest), (stub.DeleteJob, jobs_pb2.DeleteJobRequest)):
        with pytest.raises(grpc.RpcError) as err:
            call(request(job_id=job_id), metadata=md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert list(stub.ListJobs(jobs_pb2.ListJobsRequest(), metadata=md).jobs) == []
    # the owner still has it, untouched
    assert api.repo.get(job_id).status.value == "PENDING" and api.repo.get(job_id).tenant_id == "alpha"


# -- list ---------------------------------------------------------------------------------------------------
def test_list_is_newest_first_filtered_and_stable_under_inserts(api, rest, keys, channel):
    a = keys["alpha"]["key"]
    ids = [submitted(rest, a) for _ in range(5)]
    page1 = rest.get("/video/jobs", params={"page_size": 2}, headers=auth(a)).json()
    assert [j["job_id"] for j in page1["jobs"]] == ids[::-1][:2] and page1["next_page_token"]
    newer = submitted(rest, a)  # arrives between pages: must not shift them
    page2 = rest.get("/video/jobs", params={"page_size": 2, "page_token": page1["next_page_token"]},
                     headers=auth(a)).json()
    page3 = rest.get("/video/jobs", params={"page_size": 2, "page_token": page2["next_page_token"]},
                     headers=auth(a)).json()
    assert [j["job_id"] for j in page2["jobs"] + page3["jobs"]] == ids[::-1][2:] and page3["next_page_token"] == ""
    assert rest.post(f"/video/cancel/{ids[0]}", headers=auth(a)).json()["status"] == "CANCELLED"
    cancelled = rest.get("/video/jobs", params={"status": "CANCELLED"}, headers=auth(a)).json()
    assert [j["job_id"] for j in cancelled["jobs"]] == [ids[0]]
    # a token is tied to its filter; garbage is a 400 naming page_token
    r = rest.get("/video/jobs", params={"status": "PENDING", "page_token": page1["next_page_token"]}, headers=auth(a))
    assert r.status_code == 400 and r.json()["invalid_params"][0]["name"] == "page_token"
    assert rest.get("/video/jobs", params={"page_token": "garbage"}, headers=auth(a)).status_code == 400
    stub = jobs_pb2_grpc.JobServiceStub(channel)
    reply = stub.ListJobs(jobs_pb2.ListJobsRequest(page_size=10, status=jobs_pb2.JOB_STATUS_PENDING),
                          metadata=(("authorization", f"Bearer {a}"),))
    assert [j.job_id for j in reply.jobs] == [newer, *ids[::-1][:-1]]
    assert [j.queue_position for j in reply.jobs] == [4, 3, 2, 1, 0]  # older PENDING jobs ahead of each


# -- cancel and delete ------------------------------------------------------------------------------------
def test_cancel_pending_job_never_runs_and_final_job_is_409(api, rest, keys):
    a = keys["alpha"]["key"]
    job_id = submitted(rest, a)
    body = rest.post(f"/video/cancel/{job_id}", headers=auth(a)).json()
    assert body["status"] == "CANCELLED" and body["expires_at"]
    analyzer = FakeAnalyzer(frames=2)
    worker, thread = start_worker(api, analyzer)
    try:
        later = submitted(rest, a)
        wait_status(rest, a, later, ("COMPLETED",))
    finally:
        worker.request_stop()
        thread.join(10)
    assert len(analyzer.calls) == 1  # only the later job ran
    assert api.repo.get(job_id).attempt == 0 and api.queue.size() == 0
    r = rest.post(f"/video/cancel/{job_id}", headers=auth(a))
    assert r.status_code == 409 and r.json()["job_status"] == "CANCELLED" and "CANCELLED" in r.json()["detail"]
    r = rest.post(f"/video/cancel/{later}", headers=auth(a))
    assert r.status_code == 409 and r.json()["job_status"] == "COMPLETED"
    r = rest.get(f"/video/results/{job_id}", headers=auth(a))
    assert r.status_code == 409 and r.json()["job_status"] == "CANCELLED"


def test_cancel_running_job_stops_within_a_batch_acks_and_leaves_no_results(api, rest, keys):
    a = keys["alpha"]["key"]
    analyzer = FakeAnalyzer(frames=200)
    frames_after_cancel = []
    cancelled = threading.Event()

    def on_frame(i):
        if cancelled.is_set():
            frames_after_cancel.append(i)
        time.sleep(0.02)

    analyzer.on_frame = on_frame
    worker, thread = start_worker(api, analyzer)
    try:
        job_id = submitted(rest, a)
        status = wait_status(rest, a, job_id, ("RUNNING",))
        while status["frames_done"] < 3:
            status = rest.get(f"/video/status/{job_id}", headers=auth(a)).json()
        assert status["eta_seconds"] is not None and status["eta_seconds"] > 0
        cancelled.set()
        assert rest.post(f"/video/cancel/{job_id}", headers=auth(a)).json()["status"] == "CANCELLED"
        analyzer.on_frame = None
        analyzer.frames = 2  # the next job is short
        nxt = submitted(rest, a)
        wait_status(rest, a, nxt, ("COMPLETED",))  # the worker took the next job
    finally:
        worker.request_stop()
        thread.join(10)
    # The fake's batch is one frame: it saw at most the frame in progress when the cancel landed.
    assert len(frames_after_cancel) <= 1, frames_after_cancel
    job = api.repo.get(job_id)
    assert job.status.value == "CANCELLED" and job.attempt == 1
    assert not api.storage.exists(f"results/{job_id}.json")
    assert api.queue.delivery_count(job_id) == 0 and api.queue.size() == 0  # acked, nothing to redeliver


def test_delete_removes_every_object_and_the_job(api, rest, keys, worker):
    a = keys["alpha"]["key"]
    done = submitted(rest, a)
    wait_status(rest, a, done, ("COMPLETED",))
    waiting_worker_free = submitted(rest, a)
    wait_status(rest, a, waiting_worker_free, ("COMPLETED",))
    assert any(done in f for f in stored_files(api))
    assert rest.delete(f"/video/jobs/{done}", headers=auth(a)).status_code == 204
    assert [f for f in stored_files(api) if done in f] == []
    assert rest.get(f"/video/status/{done}", headers=auth(a)).status_code == 404
    assert rest.delete(f"/video/jobs/{done}", headers=auth(a)).status_code == 404
    # another job's objects are untouched
    assert sorted(f for f in stored_files(api) if waiting_worker_free in f) == [
        f"inputs/{waiting_worker_free}.mp4", f"results/{waiting_worker_free}.json"]


# -- idempotency and quotas -------------------------------------------------------------------------------
def test_concurrent_submits_with_one_idempotency_key_make_one_job(api, rest, keys):
    a, b = keys["alpha"]["key"], keys["beta"]["key"]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: submit(rest, a, headers={"Idempotency-Key": "order-42"}), range(20)))
    assert [r.status_code for r in replies] == [202] * 20, [r.text for r in replies if r.status_code != 202]
    ids = {r.json()["job_id"] for r in replies}
    assert len(ids) == 1 and len(api.repo.unfinished_job_ids()) == 1
    assert stored_files(api) == [f"inputs/{ids.pop()}.mp4"]  # the losers' copies were removed
    r = submit(rest, a, data=OTHER, headers={"Idempotency-Key": "order-42"})
    assert r.status_code == 409 and r.json()["type"] == "/problems/idempotency-conflict", r.text
    r = submit(rest, a, headers={"Idempotency-Key": "order-42"}, sample_fps=3)
    assert r.status_code == 409
    assert len(stored_files(api)) == 1
    # keys are per tenant
    assert submit(rest, b, headers={"Idempotency-Key": "order-42"}).json()["job_id"] not in {
        r.json()["job_id"] for r in replies}
    # gRPC: JobSpec.request_id
    stub = jobs_pb2_grpc.JobServiceStub(grpc.insecure_channel(f"127.0.0.1:{api.port}"))

    def messages(data):
        yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(pipeline_id="yolo", request_id="grpc-7"))
        yield jobs_pb2.SubmitRequest(chunk=data)

    md = (("authorization", f"Bearer {a}"),)
    first = stub.Submit(messages(SAMPLE.read_bytes()), metadata=md).job_id
    assert stub.Submit(messages(SAMPLE.read_bytes()), metadata=md).job_id == first
    with pytest.raises(grpc.RpcError) as err:
        stub.Submit(messages(OTHER), metadata=md)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_quota_refuses_the_next_active_job_with_retry_after_and_stores_nothing(make_api, tmp_path):
    api = make_api(max_active_jobs_per_tenant=2)
    key = create_key(make_tenant_store(api.repo), "alpha", "", PEPPER)["key"]
    other = create_key(make_tenant_store(api.repo), "beta", "", PEPPER)["key"]
    app = create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")
    with TestClient(app) as rest:
        first = [submitted(rest, key, headers={"Idempotency-Key": f"q-{i}"}) for i in range(2)]
        before = stored_files(api)
        # a retry of an accepted submit still gets its job id at the quota
        assert submit(rest, key, headers={"Idempotency-Key": "q-1"}).json()["job_id"] == first[1]
        r = submit(rest, key)
        assert r.status_code == 429 and r.json()["type"] == "/problems/too-many-jobs", r.text
        assert int(r.headers["retry-after"]) >= 1 and r.json()["retry_after_seconds"] >= 1
        assert stored_files(api) == before and len(api.repo.unfinished_job_ids()) == 2
        assert submit(rest, other).status_code == 202  # another tenant has its own quota
        rest.post(f"/video/cancel/{first[0]}", headers=auth(key))
        assert submit(rest, key).status_code == 202  # room again
    stub = jobs_pb2_grpc.JobServiceStub(grpc.insecure_channel(f"127.0.0.1:{api.port}"))

    def messages():
        yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(pipeline_id="yolo"))
        yield jobs_pb2.SubmitRequest(chunk=SAMPLE.read_bytes())

    with pytest.raises(grpc.RpcError) as err:
        stub.Submit(messages(), metadata=(("authorization", f"Bearer {key}"),))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_global_queue_bound(make_api):
    api = make_api(max_queued_jobs=1)
    key = create_key(make_tenant_store(api.repo), "alpha", "", PEPPER)["key"]
    with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")) as rest:
        submitted(rest, key)
        r = submit(rest, key)
        assert r.status_code == 429 and "queue is full" in r.json()["detail"] and r.headers["retry-after"]


# -- request rates ------------------------------------------------------------------------------------------------
def test_a_tenant_over_its_request_rate_gets_429_and_others_do_not(make_api):
    api = make_api(tenant_request_rate="3 per 60 seconds")
    store = make_tenant_store(api.repo)
    alpha, beta = (create_key(store, name, "", PEPPER)["key"] for name in ("alpha", "beta"))
    app = create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")
    with TestClient(app) as rest, grpc.insecure_channel(f"127.0.0.1:{api.port}") as channel:
        assert [rest.get("/video/jobs", headers=auth(alpha)).status_code for _ in range(3)] == [200, 200, 200]
        r = rest.get("/video/capabilities", headers=auth(alpha))  # every call counts, whatever it asks
        assert r.status_code == 429 and r.json()["type"] == "/problems/too-many-requests", r.text
        assert 1 <= int(r.headers["retry-after"]) == r.json()["retry_after_seconds"] <= 60
        assert "3 per 60 second" in r.json()["detail"]
        with pytest.raises(grpc.RpcError) as err:  # the same tenant over gRPC: the same window
            jobs_pb2_grpc.JobServiceStub(channel).ListJobs(jobs_pb2.ListJobsRequest(),
                                                           metadata=[("authorization", f"Bearer {alpha}")])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = [d for d in rpc_status.from_call(err.value).details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert len(retry) == 1
        assert rest.get("/video/jobs", headers=auth(beta)).status_code == 200  # another tenant: its own window
        assert submit(rest, alpha).status_code == 429 and api.repo.unfinished_job_ids() == []


def test_the_client_waits_out_the_request_rate_and_goes_on(make_api):
    from videojobs.client import VideoJobsClient

    api = make_api(tenant_request_rate="2 per 3 seconds")
    key = create_key(make_tenant_store(api.repo), "alpha", "", PEPPER)["key"]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with VideoJobsClient(f"127.0.0.1:{api.port}", key, sleep=sleep) as client:
        pages = [client.list_page() for _ in range(3)]
    assert [page.jobs for page in pages] == [[], [], []]
    assert len(slept) == 1 and slept[0] >= 1  # the third call waited for the window, then was answered


# -- webhooks -----------------------------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    made = []

    def make(fail_first=0):
        made.append(Receiver(fail_first, path="/hooks/videojobs?x=1"))
        return made[-1]

    yield make
    for r in made:
        r.close()


def wait_for(predicate, timeout=20.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline
        time.sleep(0.05)


def test_signed_notices_survive_failing_receiver_one_success_per_final_state(api, rest, keys, worker, receiver):
    hook = receiver(fail_first=3)
    a = keys["alpha"]
    completed = submitted(rest, a["key"], callback_url=hook.url)
    wait_status(rest, a["key"], completed, ("COMPLETED",))
    cancelled = submitted(rest, a["key"], callback_url=hook.url, pipeline_id="yolo")
    rest.post(f"/video/cancel/{cancelled}", headers=auth(a["key"]))  # may race the worker: either final state
    wait_for(lambda: len(hook.delivered()) == 2)
    time.sleep(1.0)  # nothing more arrives
    assert len(hook.delivered()) == 2 and len(hook.requests) == 5
    for headers, body, _ in hook.requests:
        verify_standard_webhook(a["webhook_secret"], headers, body)
        assert headers["host"] == hook.url.split("/")[2]
    events = {e["data"]["job_id"]: e for e in hook.delivered()}
    assert events[completed]["type"] == "job.completed" and events[completed]["data"]["status"] == "COMPLETED"
    assert events[completed]["data"]["results_url"] == f"/video/results/{completed}"
    assert events[cancelled]["data"]["status"] in ("CANCELLED", "COMPLETED")
    # the same webhook-id on every attempt of one notice
    ids = [h["webhook-id"] for h, _, _ in hook.requests]
    assert len(set(ids)) == 2
    rows = make_webhook_outbox(api.repo).deliveries_of(completed)
    assert [r["state"] for r in rows] == ["delivered"]


def test_a_notice_waiting_in_the_outbox_is_delivered_after_an_api_restart(make_api, receiver, tmp_path):
    hook = receiver()
    first = make_api()
    key = create_key(make_tenant_store(first.repo), "alpha", "", PEPPER)
    first.webhooks.stop()  # the final state is committed, the delivery has not happened
    worker, thread = start_worker(first, FakeAnalyzer(frames=2))
    with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{first.port}")) as rest:
        job_id = submitted(rest, key["key"], callback_url=hook.url)
        wait_status(rest, key["key"], job_id, ("COMPLETED",))
    worker.request_stop()
    thread.join(10)
    first.stop(grace=0)
    assert hook.requests == []
    make_api()  # a new api process on the same database
    wait_for(lambda: len(hook.delivered()) == 1)
    verify_standard_webhook(key["webhook_secret"], *hook.requests[0][:2])
    assert hook.delivered()[0]["data"]["job_id"] == job_id


def test_a_receiver_that_never_answers_2xx_is_given_up_with_the_attempts_recorded(make_api, receiver):
    hook = receiver(fail_first=1000)
    api = make_api(webhook_give_up_after_seconds=4.0)
    key = create_key(make_tenant_store(api.repo), "alpha", "", PEPPER)["key"]
    with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")) as rest:
        job_id = submitted(rest, key, callback_url=hook.url)
        rest.post(f"/video/cancel/{job_id}", headers=auth(key))
    outbox = make_webhook_outbox(api.repo)
    wait_for(lambda: outbox.deliveries_of(job_id)[0]["state"] == "failed")
    row = outbox.deliveries_of(job_id)[0]
    assert row["attempts"] == len(hook.requests) >= 2 and row["last_error"] == "HTTP 500"


@pytest.mark.parametrize("url, allow_private, reason", [
    ("http://169.254.169.254/", True, "link-local"),
    ("http://[fe80::1]/", True, "link-local"),
    ("http://127.0.0.1:9/", False, "loopback"),
    ("http://10.1.2.3/", False, "private"),
    ("ftp://example.com/", True, "http"),
    ("http://user:pw@example.com/", True, "credentials"),
    ("http://no-such-host.invalid/", True, "does not resolve"),
])
def test_callback_urls_that_are_not_public_are_refused_at_submit(make_api, url, allow_private, reason):
    api = make_api(webhook_allow_private=allow_private)
    key = create_key(make_tenant_store(api.repo), "alpha", "", PEPPER)["key"]
    with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")) as rest:
        r = submit(rest, key, callback_url=url)
    assert r.status_code == 422 and r.json()["type"] == "/problems/invalid-callback-url", r.text
    assert reason in r.json()["detail"] and r.json()["invalid_params"][0]["name"] == "callback_url"
    assert api.repo.unfinished_job_ids() == [] and stored_files(api) == []


# -- secrets stay secret -----------------------------------------------------------------------------------------
def test_keys_never_reach_logs_database_or_errors(api, rest, keys, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    a = keys["alpha"]["key"]
    job_id = submitted(rest, a)
    rest.get(f"/video/status/{job_id}", headers=auth(a))
    bad = a[:-4] + "AAAA"
    r = rest.get("/video/jobs", headers=auth(bad))
    assert r.status_code == 401 and bad not in r.text and a[4:14] not in r.text
    secret_part = a.split("_", 2)[2]  # vjk_<prefix>_<secret>; the secret itself may hold "_"
    assert len(secret_part) == 43
    assert secret_part not in caplog.text and bad.split("_", 2)[2] not in caplog.text
    db = (api.settings.data_dir / "videojobs.db").read_bytes()
    for path in api.settings.data_dir.glob("videojobs.db*"):
        db += path.read_bytes()
    assert secret_part.encode() not in db and a.encode() not in db
    assert keys["alpha"]["prefix"].encode() in db  # the prefix is what is kept (with a hash)


def test_keys_command_creates_lists_and_revokes(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "VIDEOJOBS_DATA_DIR": str(tmp_path), "VIDEOJOBS_API_KEY_PEPPER": PEPPER}

    def keys(*args):
        run = subprocess.run([sys.executable, "-m", "videojobs.cli", "keys", *args], env=env, capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
        return run.returncode, run.stdout, run.stderr

    code, out, err = keys("create", "--tenant", "alpha", "--label", "ci", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert set(made) == {"key", "prefix", "tenant", "webhook_secret"} and made["tenant"] == "alpha"
    assert made["key"].startswith(f"vjk_{made['prefix']}_") and made["webhook_secret"].startswith("whsec_")
    code, out, _ = keys("create", "--tenant", "alpha", "--json")
    assert json.loads(out)["webhook_secret"] == made["webhook_secret"]  # one secret per tenant
    code, out, _ = keys("list", "--json")
    listed = json.loads(out)
    assert {k["prefix"] for k in listed} >= {made["prefix"]} and made["key"] not in out
    assert keys("create", "--tenant", "Not A Name")[0] != 0
    api = build_api(settings_for(tmp_path))
    api.start()
    try:
        with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")) as rest:
            assert rest.get("/video/jobs", headers=auth(made["key"])).status_code == 200
            code, out, _ = keys("revoke", made["prefix"])
            assert code == 0 and "revoked" in out
            assert keys("revoke", made["prefix"])[0] == 1
            time.sleep(2.5)  # the api's key cache
            assert rest.get("/video/jobs", headers=auth(made["key"])).status_code == 401
    finally:
        api.stop(grace=0)


# -- tenants' own limits ----------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def tenant_store(request, tmp_path):
    from videojobs.common.adapters.sql.engine import make_engine
    from videojobs.common.adapters.sql.migrate import upgrade
    from videojobs.common.adapters.sql.tenants import SqlTenantStore

    engine = request.getfixturevalue("pg_engine") if request.param == "postgres" else \
        make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    upgrade(engine)
    yield SqlTenantStore(engine), engine
    engine.dispose()


def test_the_store_keeps_each_tenants_own_limits_and_none_for_the_services(tenant_store, caplog):

    from videojobs.api.tenants import set_limits
    from videojobs.common.adapters.sql.tables import tenants
    from videojobs.common.tenants import TenantLimits

    store, engine = tenant_store
    for name in ("beta", "alpha"):
        store.ensure_tenant(name)
    assert [t.tenant_id for t in store.list_tenants()] == ["alpha", "beta"]
    assert all(t.limits == TenantLimits() for t in store.list_tenants())
    assert set_limits(store, "alpha", "5", None).limits == TenantLimits(5, None)
    assert set_limits(store, "alpha", None, "none").limits == TenantLimits(5, "")  # the other field stays
    assert set_limits(store, "alpha", "default", "20 per 1 minute").limits == TenantLimits(None, "20 per 1 minute")
    assert store.get_tenant("alpha").limits == TenantLimits(None, "20 per 1 minute")
    assert store.get_tenant("beta").limits == TenantLimits()  # the others keep the service's
    assert store.set_limits("gamma", TenantLimits(1, None)) is None
    with pytest.raises(ValueError, match="no tenant 'gamma'.*--create"):
        set_limits(store, "gamma", "1", None)
    assert store.get_tenant("gamma") is None
    assert set_limits(store, "gamma", "1", None, create=True).limits == TenantLimits(1, None)
    for bad in (("-1", None), ("lots", None), (None, "quickly")):
        with pytest.raises(ValueError):
            set_limits(store, "alpha", *bad)
    assert store.get_tenant("alpha").limits == TenantLimits(None, "20 per 1 minute")  # nothing half-written
    with engine.begin() as conn:  # written around the command: logged, and the tenant gets the service's limits
        conn.execute(tenants.update().where(tenants.c.tenant_id == "beta").values(request_rate="whenever"))
    with caplog.at_level("ERROR"):
        assert store.get_tenant("beta").limits == TenantLimits()
    assert "tenant beta: its own limits in the database are not valid" in caplog.text


def test_a_tenants_own_limits_replace_the_services_for_it_alone(make_api):
    from videojobs.api.tenants import set_limits

    api = make_api(max_active_jobs_per_tenant=1, tenant_request_rate="50 per 60 seconds")
    store = make_tenant_store(api.repo)
    big, small, chatty = (create_key(store, name, "", PEPPER)["key"] for name in ("big", "small", "chatty"))
    set_limits(store, "big", "3", "none")
    set_limits(store, "chatty", None, "2 per 60 seconds")
    with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")) as rest:
        assert [submit(rest, big).status_code for _ in range(4)] == [202, 202, 202, 429]
        r = submit(rest, big)
        assert r.json()["type"] == "/problems/too-many-jobs" and "the limit is 3" in r.json()["detail"], r.text
        assert [submit(rest, small).status_code for _ in range(2)] == [202, 429]  # the service's bound
        assert [rest.get("/video/jobs", headers=auth(big)).status_code for _ in range(60)] == [200] * 60  # none
        codes = [rest.get("/video/jobs", headers=auth(chatty)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert "2 per 60 second" in rest.get("/video/jobs", headers=auth(chatty)).json()["detail"]
        with grpc.insecure_channel(f"127.0.0.1:{api.port}") as channel:  # the same rate over gRPC
            with pytest.raises(grpc.RpcError) as err:
                jobs_pb2_grpc.JobServiceStub(channel).ListJobs(jobs_pb2.ListJobsRequest(),
                                                               metadata=[("authorization", f"Bearer {chatty}")])
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        calls = [rest.get("/video/jobs", headers=auth(small)).status_code for _ in range(50)]
        assert calls == [200] * 48  + [429] * 2  # the service's 50, two already spent on submits


def test_tenants_command_sets_and_lists_limits_that_a_running_api_applies_within_seconds(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "VIDEOJOBS_DATA_DIR": str(tmp_path), "VIDEOJOBS_API_KEY_PEPPER": PEPPER,
           "VIDEOJOBS_MAX_ACTIVE_JOBS_PER_TENANT": "1"}

    def videojobs(*args):
        run = subprocess.run([sys.executable, "-m", "videojobs.cli", *args], env=env, capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
        return run.returncode, run.stdout, run.stderr

    code, out, err = videojobs("tenants", "set", "alpha", "--max-active-jobs", "2")
    assert code == 2 and "no tenant 'alpha'" in err and "videojobs keys create --tenant alpha" in err
    key = json.loads(videojobs("keys", "create", "--tenant", "alpha", "--json")[1])["key"]
    assert videojobs("tenants", "set", "alpha")[0] == 2  # nothing to set
    code, _, err = videojobs("tenants", "set", "alpha", "--request-rate", "often")
    assert code == 2 and "request rate reads like" in err
    api = build_api(settings_for(tmp_path, max_active_jobs_per_tenant=1))
    api.start()
    try:
        with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), f"127.0.0.1:{api.port}")) as rest:
            assert [submit(rest, key).status_code for _ in range(2)] == [202, 429]
            code, out, err = videojobs("tenants", "set", "alpha", "--max-active-jobs", "2", "--json")
            assert code == 0, err
            shown = json.loads(out)
            assert shown["max_active_jobs"] == shown["max_active_jobs_in_force"] == 2 and shown["active_keys"] == 1
            assert shown["request_rate"] is None and shown["request_rate_in_force"] == ""
            time.sleep(2.5)  # the api's cache of tenants' limits
            assert [submit(rest, key).status_code for _ in range(2)] == [202, 429]
            assert videojobs("tenants", "set", "alpha", "--max-active-jobs", "default")[0] == 0
            code, out, _ = videojobs("tenants", "list")
            assert code == 0 and "alpha" in out and "1 (service default)" in out, out
            time.sleep(2.5)
            assert rest.post(f"/video/cancel/{api.repo.unfinished_job_ids()[0]}",
                             headers=auth(key)).status_code == 200
            assert submit(rest, key).status_code == 429  # back to the service's 1: one still unfinished
    finally:
        api.stop(grace=0)
    code, out, _ = videojobs("tenants", "list", "--json")
    assert [(t["tenant"], t["max_active_jobs"], t["max_active_jobs_in_force"]) for t in json.loads(out)] == \
        [("alpha", None, 1)]
