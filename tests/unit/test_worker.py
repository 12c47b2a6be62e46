import json
import threading
import time
from datetime import timedelta

import pytest

from tests.fakes import FakeAnalyzer, FakeJobRepository
from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.errors import PoisonInput, TemporaryFault
from videojobs.common.options import AnalysisOptions
from videojobs.common.job import Job, JobStatus
from videojobs.common.retry import Backoff
from videojobs.storage.local import LocalFolderStorage
from videojobs.worker.worker import JobWorker, WorkerPolicy, hand_back_orphans

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 100


@pytest.fixture
def env(tmp_path):
    repo, queue = FakeJobRepository(), InMemoryQueue(ack_wait_seconds=30)
    storage = LocalFolderStorage(tmp_path / "store")
    analyzer = FakeAnalyzer(frames=4)
    policy = WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=0.05, max_attempts=3,
                          progress_interval_seconds=0.0, backoff=Backoff(0.01, 0.02),
                          commit_backoff=Backoff(0.01, 0.02), fault_window=timedelta(seconds=0.5))
    worker = JobWorker(queue, storage, repo, analyzer, policy, worker_id="w1")

    def submit(**options):
        job = Job.submit("yolo_ocr", AnalysisOptions(**options))
        storage.save_bytes(MP4, job.input_key)
        repo.add(job)
        queue.enqueue(job.job_id)
        return job.job_id

    return type("Env", (), dict(repo=repo, queue=queue, storage=storage, analyzer=analyzer,
                                worker=worker, submit=staticmethod(submit), policy=policy))


def test_run_once_on_empty_queue_returns_false(env):
    assert env.worker.run_once() is False


def test_job_goes_pending_running_completed_with_results_and_progress(env):
    job_id = env.submit(max_frames=4)
    seen = []
    env.analyzer.on_frame = lambda i: seen.append(env.repo.rows[job_id].status)
    assert env.worker.run_once() is True
    job = env.repo.get(job_id)
    assert seen[0] is JobStatus.RUNNING
    assert job.status is JobStatus.COMPLETED and job.progress == 1.0 and job.frames_done == 4
    doc = json.loads(env.storage.read_bytes(job.output_key))
    assert [f["frame_index"] for f in doc["results"]] == [0, 30, 60, 90]
    assert env.analyzer.calls[0][2].max_frames == 4
    # progress was written while running, not only at the end
    assert [s for s in env.repo.saves if s[1] == "RUNNING"][1:]  # claim + at least one progress write
    assert env.queue.size() == 0 and env.queue.delivery_count(job_id) == 0  # acked


def test_results_bytes_are_deterministic(env):
    a, b = env.submit(), env.submit()
    env.worker.run_once(), env.worker.run_once()
    ra = env.storage.read_bytes(env.repo.get(a).output_key)
    rb = env.storage.read_bytes(env.repo.get(b).output_key)
    assert ra == rb


def test_poison_input_fails_fast_and_is_terminated(env):
    job_id = env.submit()
    env.analyzer.raise_error = PoisonInput("not a video: moov atom not found")
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.FAILED and "moov atom" in job.error_message
    assert env.queue.dequeue() is None  # never redelivered


def test_any_exception_ends_failed_never_running(env):
    job_id = env.submit()
    env.analyzer.raise_error = ZeroDivisionError("boom")
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.FAILED and "ZeroDivisionError" in job.error_message
    assert "boom" not in job.error_message  # the exception's own text stays in the logs


def test_missing_input_fails_with_reason(env):
    job_id = env.submit()
    env.storage.delete_file(env.repo.get(job_id).input_key)
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.FAILED and "no longer in storage" in job.error_message
    assert "inputs/" not in job.error_message  # no object keys in what clients read


def test_stop_mid_job_hands_the_job_back(env):
    job_id = env.submit()
    env.analyzer.on_frame = lambda i: env.worker.request_stop() if i == 2 else None
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.PENDING and job.attempt == 1
    assert env.queue.dequeue() == job_id  # nak'ed: available again at once
    # a fresh worker completes it
    fresh = JobWorker(env.queue, env.storage, env.repo, FakeAnalyzer(), env.policy, worker_id="w2")
    env.queue.nak(job_id)
    fresh.run_once()
    assert env.repo.get(job_id).status is JobStatus.COMPLETED and env.repo.get(job_id).attempt == 2


def test_redelivery_of_a_final_job_is_acked_and_dropped(env):
    job_id = env.submit()
    env.worker.run_once()
    saves = len(env.repo.saves)
    env.queue.enqueue(job_id)  # duplicate delivery
    env.worker.run_once()
    assert len(env.repo.saves) == saves and env.queue.size() == 0
    assert len(env.analyzer.calls) == 1


def test_worker_that_lost_its_lease_cannot_overwrite_the_winner(env):
    job_id = env.submit()

    def steal(i):
        if i == 1:  # another worker takes the job over after our lease "expired"
            row = env.repo.rows[job_id]
            row.attempt += 1
            row.worker_id = "w2"

    env.analyzer.on_frame = steal
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.RUNNING and job.worker_id == "w2" and job.attempt == 2


def test_temporary_faults_are_not_attempts_and_fail_only_after_the_window(env):
    job_id = env.submit()
    env.analyzer.raise_error = TemporaryFault("storage at 10.0.0.7:9000 unavailable")
    started = time.monotonic()
    while env.repo.get(job_id).status is not JobStatus.FAILED:
        assert env.worker.run_once(timeout=2)  # redelivered after the (short) backoff
        job = env.repo.get(job_id)
        if job.status is JobStatus.PENDING:
            assert job.crashes == 0 and job.faults >= 1
        assert time.monotonic() - started < 10
    job = env.repo.get(job_id)
    assert time.monotonic() - started >= 0.5  # not before the window
    assert job.faults >= 3 and job.crashes == 0
    assert "unavailable for more than" in job.error_message and "10.0.0.7" not in job.error_message


def test_a_short_outage_is_survived_and_the_job_completes(env):
    job_id = env.submit()
    env.analyzer.raise_error = TemporaryFault("storage unavailable")
    assert env.worker.run_once(timeout=2) and env.worker.run_once(timeout=2)
    env.analyzer.raise_error = None  # the storage is back
    assert env.worker.run_once(timeout=2)
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED and job.faults == 2 and job.crashes == 0


def test_deliveries_that_never_reached_the_job_do_not_count(env):
    """Deliveries lost before the claim (database down, worker killed before reading) are not attempts."""
    job_id = env.submit()
    for _ in range(6):
        assert env.queue.dequeue() == job_id
        env.queue.nak(job_id)
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt == 1


def test_a_database_outage_before_the_claim_is_a_redelivery_not_an_attempt(env):
    job_id = env.submit()
    env.repo.down = True
    assert env.worker.run_once()  # cannot read the job: nak'ed with a backoff
    env.repo.down = False
    assert env.repo.get(job_id).attempt == 0
    assert env.worker.run_once(timeout=2)
    assert env.repo.get(job_id).status is JobStatus.COMPLETED


def test_results_and_outcome_are_written_in_place_through_a_blip(env):
    """A finished analysis is never redone because storage or the database blinked at the end."""
    job_id = env.submit()
    real_save = env.storage.save_file
    failures = {"storage": 2, "database": 2}

    def flaky_save_file(src, key):  # an upload that dies after reading some of the results
        if failures["storage"]:
            failures["storage"] -= 1
            src.read(50)
            raise TemporaryFault("storage unavailable")
        return real_save(src, key)

    real_repo_save = env.repo.save

    def flaky_repo_save(job, status, attempt):
        if job.status is JobStatus.COMPLETED and failures["database"]:
            failures["database"] -= 1
            raise TemporaryFault("database unavailable")
        return real_repo_save(job, status, attempt)

    env.storage.save_file = flaky_save_file
    env.repo.save = flaky_repo_save
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED and len(env.analyzer.calls) == 1 and job.faults == 0
    assert failures == {"storage": 0, "database": 0}
    stored = json.loads(env.storage.read_bytes(job.output_key))  # whole: each try started from the beginning
    assert len(stored["results"]) == job.frames_done > 0


def test_exhausted_attempts_after_crashes_end_failed(env):
    job_id = env.submit()
    row = env.repo.rows[job_id]
    # Three attempts whose workers died: the third take finds its lease expired too.
    row.status, row.attempt, row.crashes, row.lease_expires_at = JobStatus.RUNNING, 3, 2, None
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.FAILED and "lost 3 times" in job.error_message
    assert env.analyzer.calls == [] and env.queue.dequeue() is None  # terminated


def test_a_crash_counts_but_a_hand_back_does_not(env):
    job_id = env.submit()
    row = env.repo.rows[job_id]
    row.status, row.attempt, row.lease_expires_at = JobStatus.RUNNING, 1, None  # one crashed attempt
    env.worker.run_once()
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED and job.crashes == 1 and job.attempt == 2


def test_live_lease_of_another_worker_is_respected(env):
    job_id = env.submit()
    held = env.repo.get(job_id)
    held.start("other", timedelta(seconds=30))
    env.repo.save(held, JobStatus.PENDING, 0)
    env.worker.run_once()
    assert env.repo.get(job_id).worker_id == "other" and env.analyzer.calls == []


def test_heartbeats_extend_the_lease_during_a_long_job(env):
    job_id = env.submit()
    leases = []
    stop = threading.Event()

    def slow(i):
        stop.wait(0.12)
        leases.append(env.repo.rows[job_id].lease_expires_at)

    env.analyzer.on_frame = slow
    env.worker.run_once()
    assert len(set(leases)) > 1


def test_run_forever_stops_on_request(env):
    t = threading.Thread(target=env.worker.run_forever)
    t.start()
    job_id = env.submit()
    for _ in range(100):
        if env.repo.get(job_id).status is JobStatus.COMPLETED:
            break
        threading.Event().wait(0.05)
    env.worker.request_stop()
    t.join(5)
    assert not t.is_alive() and env.repo.get(job_id).status is JobStatus.COMPLETED


def test_orphans_are_handed_back_at_embedded_start(env):
    job_id = env.submit()
    job = env.repo.get(job_id)
    job.start("dead-process", timedelta(hours=1))
    env.repo.save(job, JobStatus.PENDING, 0)
    assert hand_back_orphans(env.repo) == 1
    assert env.repo.get(job_id).status is JobStatus.PENDING


