from datetime import datetime, timedelta, timezone

import pytest

from videojobs.common.errors import IllegalTransition, InvalidJobId
from videojobs.common.options import AnalysisOptions
from videojobs.common.job import Job, JobStatus, parse_job_id

LEASE = timedelta(seconds=30)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def running_job() -> Job:
    job = Job.submit("yolo_ocr", now=T0)
    job.start("w1", LEASE, now=T0)
    return job


def test_submit_creates_pending_job_with_input_key():
    job = Job.submit("yolo", AnalysisOptions(sample_fps=1.0))
    assert job.status is JobStatus.PENDING
    assert job.input_key == f"inputs/{job.job_id}.mp4"
    assert job.attempt == 0 and job.progress == 0.0


def test_happy_path_pending_running_completed():
    job = running_job()
    assert job.status is JobStatus.RUNNING and job.attempt == 1 and job.worker_id == "w1"
    job.report_progress(3, 4)
    assert job.progress == 0.75
    job.complete("results/x.json")
    assert job.status is JobStatus.COMPLETED and job.progress == 1.0 and job.output_key == "results/x.json"


def test_running_to_failed_keeps_reason():
    job = running_job()
    job.fail("  bad video  ")
    assert job.status is JobStatus.FAILED and job.error_message == "bad video"


@pytest.mark.parametrize(
    "prepare, transition",
    [
        (lambda j: None, lambda j: j.complete("k")),  # PENDING -> COMPLETED
        (lambda j: None, lambda j: j.fail("x")),  # PENDING -> FAILED (pipeline never ran)
        (lambda j: None, lambda j: j.release()),  # PENDING -> PENDING
        (lambda j: None, lambda j: j.report_progress(1, 2)),
        (lambda j: (j.start("w", LEASE, T0), j.complete("k")), lambda j: j.start("w2", LEASE, T0 + LEASE * 10)),
        (lambda j: (j.start("w", LEASE, T0), j.complete("k")), lambda j: j.fail("late")),
        (lambda j: (j.start("w", LEASE, T0), j.fail("x")), lambda j: j.complete("k")),
        (lambda j: (j.start("w", LEASE, T0), j.fail("x")), lambda j: j.give_up("again")),
        (lambda j: (j.start("w", LEASE, T0), j.complete("k")), lambda j: j.release()),
    ],
)
def test_illegal_transitions_are_rejected(prepare, transition):
    job = Job.submit("yolo_ocr", now=T0)
    prepare(job)
    before = (job.status, job.attempt, job.output_key, job.error_message)
    with pytest.raises(IllegalTransition):
        transition(job)
    assert (job.status, job.attempt, job.output_key, job.error_message) == before


def test_running_job_with_live_lease_cannot_be_taken_again():
    job = running_job()
    with pytest.raises(IllegalTransition):
        job.start("w2", LEASE, now=T0 + timedelta(seconds=10))


def test_running_job_with_expired_lease_is_taken_with_a_new_attempt():
    job = running_job()
    job.report_progress(2, 4, now=T0)
    job.start("w2", LEASE, now=T0 + LEASE + timedelta(seconds=1))
    assert job.attempt == 2 and job.worker_id == "w2" and job.frames_done == 0


def test_release_hands_job_back_as_pending():
    job = running_job()
    job.release()
    assert job.status is JobStatus.PENDING and job.worker_id is None and job.can_be_taken()
    assert job.attempt == 1  # attempts only grow, so stale writers stay fenced off


def test_progress_must_be_consistent():
    job = running_job()
    with pytest.raises(ValueError):
        job.report_progress(5, 4)


def test_give_up_ends_pending_or_running_job_failed():
    job = Job.submit("yolo")
    job.give_up("too many attempts")
    assert job.status is JobStatus.FAILED and "too many" in job.error_message


@pytest.mark.parametrize("raw", ["", "abc", "123", "../etc/passwd", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
def test_malformed_job_ids_are_rejected(raw):
    with pytest.raises(InvalidJobId):
        parse_job_id(raw)


def test_job_id_is_canonicalised():
    assert parse_job_id("A0B1C2D3-E4F5-4A6B-8C7D-0E1F2A3B4C5D") == "a0b1c2d3-e4f5-4a6b-8c7d-0e1f2a3b4c5d"


def test_retaking_an_expired_attempt_counts_a_crash_but_not_a_hand_back():
    job = running_job()
    job.start("w2", LEASE, now=T0 + LEASE * 2)  # the first worker's lease ran out
    assert job.crashes == 1 and job.attempt == 2
    job.release(now=T0 + LEASE * 2)
    job.start("w3", LEASE, now=T0 + LEASE * 3)
    assert job.crashes == 1 and job.attempt == 3


def test_faults_form_a_streak_with_its_start():
    job = running_job()
    assert job.faulting_for(T0) == timedelta(0)
    job.release_after_fault(now=T0 + timedelta(seconds=5))
    assert job.status is JobStatus.PENDING and job.faults == 1
    job.start("w", LEASE, now=T0 + timedelta(seconds=10))
    job.release_after_fault(now=T0 + timedelta(seconds=20))
    assert job.faults == 2 and job.faulting_for(T0 + timedelta(seconds=65)) == timedelta(seconds=60)
    assert job.crashes == 0
