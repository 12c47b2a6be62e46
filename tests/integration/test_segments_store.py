"""Segments in the job store (SQLite and Postgres, migrations 0006-0007): split, guarded writes, counts, fault streaks, strays."""

from datetime import timedelta

import pytest

from tests.integration.test_sql_repository import engine, repo  # noqa: F401 -- shared fixtures (pg_engine: conftest)
from videojobs.common.job import Job, JobStatus, utcnow
from videojobs.common.options import AnalysisOptions
from videojobs.common.segments import Segment, SegmentStatus, split_samples

LEASE = timedelta(seconds=30)


def _split_job(repo, samples=20, size=6):  # noqa: F811
    job = Job.submit("yolo", AnalysisOptions())
    repo.add(job)
    job.start("w1", LEASE)
    assert repo.save(job, JobStatus.PENDING, 0)
    ranges = split_samples(samples, size)
    parts = [Segment(job.job_id, i, a, b, a * 30, (b - 1) * 30) for i, (a, b) in enumerate(ranges)]
    job.split(len(parts), samples)
    assert repo.split(job, parts, job.attempt)
    return job, parts


def test_split_is_guarded_by_the_attempt_and_counts_come_from_segments(repo):  # noqa: F811
    job, parts = _split_job(repo)
    stale = repo.get(job.job_id)
    stale.segments_total = 0
    assert not repo.split(stale, parts, job.attempt - 1)  # another attempt's split writes nothing
    stored = repo.get(job.job_id)
    assert stored.segments_total == 4 and stored.frames_total == 20 and stored.lease_expires_at is None
    assert [(s.first_sample, s.end_sample, s.first_frame, s.last_frame) for s in repo.segments(job.job_id)] == [
        (0, 5, 0, 120), (5, 10, 150, 270), (10, 15, 300, 420), (15, 20, 450, 570)]

    seg = repo.get_segment(job.job_id, 1)
    seg.start("w2", LEASE)
    assert repo.save_segment(seg, SegmentStatus.PENDING, 0)
    assert not repo.save_segment(seg, SegmentStatus.PENDING, 0)  # a second claim loses
    seg.report_progress(3, 5)
    assert repo.save_segment(seg, SegmentStatus.RUNNING, 1)
    other = repo.get_segment(job.job_id, 0)
    other.start("w3", LEASE)
    repo.save_segment(other, SegmentStatus.PENDING, 0)
    other.finish()
    assert repo.save_segment(other, SegmentStatus.RUNNING, 1)
    # a lost worker: its lease ran out; the retake counts its frames as recomputed
    seg.lease_expires_at = utcnow() - timedelta(seconds=1)
    repo.save_segment(seg, SegmentStatus.RUNNING, 1)
    seg = repo.get_segment(job.job_id, 1)
    seg.start("w4", LEASE)
    assert repo.save_segment(seg, SegmentStatus.RUNNING, 1)

    now = repo.get(job.job_id)
    assert (now.frames_done, now.segments_done, now.frames_recomputed) == (5, 1, 3)
    assert abs(now.progress - 0.25) < 1e-9
    listed = repo.list_owned(job.tenant_id, None, 10)
    assert (listed[0].segments_done, listed[0].frames_recomputed) == (1, 3)


def test_stranded_segments_and_split_jobs_awaiting_their_merge(repo):  # noqa: F811
    job, parts = _split_job(repo, samples=12, size=6)
    later = utcnow() + timedelta(seconds=1)
    # both PENDING and never touched since the split: their messages may be lost
    assert repo.stranded_segments(later) == [(job.job_id, 0), (job.job_id, 1)]
    assert repo.stranded_segments(utcnow() - timedelta(hours=1)) == []
    assert job.job_id not in repo.stranded_job_ids(later)  # its segments carry the work
    for index in (0, 1):
        seg = repo.get_segment(job.job_id, index)
        seg.start("w", LEASE)
        repo.save_segment(seg, SegmentStatus.PENDING, 0)
        seg.finish()
        repo.save_segment(seg, SegmentStatus.RUNNING, 1)
    assert repo.stranded_segments(utcnow() + timedelta(hours=1)) == []
    # all DONE, nobody merging: the reconciler republishes the job message so a worker merges
    assert job.job_id in repo.stranded_job_ids(utcnow() + timedelta(hours=1))


def test_deleting_a_job_removes_its_segments(repo):  # noqa: F811
    job, _ = _split_job(repo)
    fresh = repo.get(job.job_id)
    expected = (fresh.status, fresh.attempt)
    fresh.cancel()
    assert repo.save(fresh, *expected)
    assert repo.delete(job.job_id, JobStatus.CANCELLED)
    assert repo.segments(job.job_id) == []
    with pytest.raises(Exception):
        repo.get_segment(job.job_id, 0)


def test_a_segments_fault_streak_is_stored(repo):  # noqa: F811
    job, _ = _split_job(repo)
    seg = repo.get_segment(job.job_id, 2)
    seg.start("w1", LEASE)
    assert repo.save_segment(seg, SegmentStatus.PENDING, 0)
    seg.release_after_fault()
    assert repo.save_segment(seg, SegmentStatus.RUNNING, 1)
    stored = repo.get_segment(job.job_id, 2)
    assert stored.status is SegmentStatus.PENDING and stored.faults == 1 and stored.crashes == 0
    assert stored.faulting_since == seg.faulting_since and stored.faulting_for() >= timedelta(0)
