"""The worker's metrics: finished jobs, durations, queue wait, frames, seconds per stage, busy and idle threads."""

from __future__ import annotations

import contextlib
from typing import Iterator

from prometheus_client import Counter, Gauge, Histogram

from videojobs.common.observability.metrics import JOB_BUCKETS

# Stages of one job, in order: fetch the input, the pipeline's own stages, store the results.
STAGES = ("download", "decode", "detect", "track", "ocr", "store")
# Why a job ended FAILED (bounded; the job's error_message has the detail).
FAILURE_REASONS = ("poison_input", "analysis_error", "fault_window", "worker_lost")

JOBS_FINISHED = Counter(
    "videojobs_jobs_finished_total", "Jobs that reached a final status, by pipeline and status.", ["pipeline", "status"])
JOBS_FAILED = Counter(
    "videojobs_jobs_failed_total", "FAILED jobs by pipeline and kind of reason.", ["pipeline", "reason"])
JOB_DURATION = Histogram(
    "videojobs_job_duration_seconds", "Seconds from submit to the final status, by pipeline and status.",
    ["pipeline", "status"], buckets=JOB_BUCKETS)
QUEUE_WAIT = Histogram(
    "videojobs_job_queue_wait_seconds", "Seconds a job waited PENDING before a worker claimed it, by pipeline.",
    ["pipeline"], buckets=JOB_BUCKETS)
ATTEMPT_DURATION = Histogram(
    "videojobs_job_attempt_seconds", "Seconds of one analysis attempt, claim to outcome, by pipeline.",
    ["pipeline"], buckets=JOB_BUCKETS)
FRAMES_ANALYSED = Counter(
    "videojobs_frames_analysed_total", "Frames in the results of COMPLETED jobs, by pipeline.", ["pipeline"])
STAGE_SECONDS = Histogram(
    "videojobs_stage_seconds", "Seconds one job spent in a stage (download, decode, detect, track, ocr, store).",
    ["pipeline", "stage"], buckets=JOB_BUCKETS)
HANDED_BACK = Counter(
    "videojobs_jobs_handed_back_total", "Attempts handed back for a later retry, by reason (shutdown, fault).",
    ["reason"])
SEGMENTS = Counter(
    "videojobs_segments_total", "Segments of split jobs, by status: created by a split (PENDING), finished (DONE).",
    ["status"])
WORKER_THREADS = Gauge("videojobs_worker_threads", "Worker threads running in this process (busy or idle).")
BUSY_THREADS = Gauge("videojobs_worker_busy_threads", "Worker threads of this process handling a job right now.")


def observe_stage(pipeline_id: str, stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(pipeline_id, stage).observe(seconds)


def observe_final(pipeline_id: str, status: str, seconds: float, attempt_seconds: float | None = None,
                  failure: str | None = None, frames: int = 0) -> None:
    """A job reached COMPLETED or FAILED (committed by this worker)."""
    JOBS_FINISHED.labels(pipeline_id, status).inc()
    JOB_DURATION.labels(pipeline_id, status).observe(seconds)
    if attempt_seconds is not None:
        ATTEMPT_DURATION.labels(pipeline_id).observe(attempt_seconds)
    if failure is not None:
        JOBS_FAILED.labels(pipeline_id, failure).inc()
    if frames:
        FRAMES_ANALYSED.labels(pipeline_id).inc(frames)


@contextlib.contextmanager
def thread_running() -> Iterator[None]:
    """A worker thread's loop: counted while it runs."""
    WORKER_THREADS.inc()
    try:
        yield
    finally:
        WORKER_THREADS.dec()


@contextlib.contextmanager
def busy() -> Iterator[None]:
    """A worker thread handling a delivery."""
    BUSY_THREADS.inc()
    try:
        yield
    finally:
        BUSY_THREADS.dec()
