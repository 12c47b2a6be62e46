"""The worker loop: take a job id from the queue, run the pipeline, store results, record the outcome.

Follows the seed's JobWorker (run_once / run_forever) with the reliability rules
of a work queue: the job is claimed with a new attempt number and a lease, the
lease is kept alive while the pipeline runs, every write after the claim is
guarded by that attempt, and the queue message is acked only once the final
status is committed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

from opentelemetry.trace import SpanKind

from videojobs.common.errors import (
    InvalidOptions,
    JobInterrupted,
    JobNotFound,
    PoisonInput,
    StorageObjectNotFound,
    TemporaryFault,
    VideoJobsError,
)
from videojobs.common.job import FaultStreak, Job, JobStatus, output_key_for, utcnow
from videojobs.common.observability import logs, tracing
from videojobs.common.ports.analysis import VideoAnalyzer
from videojobs.common.ports.capabilities import CapabilityStore
from videojobs.common.ports.jobs import JobRepository
from videojobs.common.ports.queue import QueueService
from videojobs.common.ports.storage import StorageService
from videojobs.common.resources import WorkerCapabilities
from videojobs.common.retry import Backoff
from videojobs.common.segments import (
    Segment,
    SkippedSegment,
    SegmentStatus,
    WorkItem,
    parse_message,
    segment_message,
)
from videojobs.common.segments import segment_key as segment_key_of
from videojobs.worker import metrics

if TYPE_CHECKING:
    from videojobs.common.ports.analysis import SplitPlan
    from videojobs.worker.frames import FrameImageWriter, JobFrameImages

log = logging.getLogger(__name__)
_tracer = tracing.tracer(__name__)
T = TypeVar("T")

# Errors that can never succeed on retry: the job fails at once and the message is terminated.
_POISON = (PoisonInput, InvalidOptions, StorageObjectNotFound)


@dataclass(frozen=True)
class WorkerPolicy:
    """How a worker holds, retries and gives up jobs.

    Attempts lost to a crashed or killed worker count towards ``max_attempts``; a
    temporary fault of a backing service does not: the job is handed back and
    retried with ``backoff`` (capped exponential, jittered) until the faults have
    lasted ``fault_window``, then FAILED with the reason. A finished analysis whose
    results or final status cannot be written yet is retried in place
    (``commit_backoff``) within the same window, so an outage never costs the work.
    """

    lease: timedelta = timedelta(seconds=60)
    heartbeat_seconds: float = 10.0
    max_attempts: int = 3
    idle_backoff_min: float = 0.05
    idle_backoff_max: float = 2.0
    backoff: Backoff = Backoff(base=1.0, cap=30.0)
    commit_backoff: Backoff = Backoff(base=0.2, cap=5.0)
    fault_window: timedelta = timedelta(minutes=10)
    progress_interval_seconds: float = 0.5
    # Jobs with more sampled frames than this are split into segments (0: never split).
    segment_frames: int = 0


_worker_numbers = itertools.count()


def default_worker_id() -> str:
    """Unique per process and worker: host (the pod's name on Kubernetes), pid, and a number
    counted per process (thread idents are reused, and all workers are built on one thread)."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_worker_numbers)}"


class JobWorker:
    def __init__(
        self,
        queue: QueueService,
        storage: StorageService,
        repo: JobRepository,
        analyzer: VideoAnalyzer,
        policy: WorkerPolicy | None = None,
        worker_id: str | None = None,
        stop_event: threading.Event | None = None,
        capabilities: CapabilityStore | None = None,
        frame_images: "FrameImageWriter | None" = None,
    ) -> None:
        self._queue = queue
        self._storage = storage
        self._repo = repo
        self._analyzer = analyzer
        self._capabilities = capabilities
        self._frame_images = frame_images if frame_images is not None and frame_images.enabled else None
        self._policy = policy or WorkerPolicy()
        self.worker_id = worker_id or default_worker_id()
        self.stop_event = stop_event or threading.Event()
        self.jobs_processed = 0

    # -- loop ------------------------------------------------------------------------------
    def run_once(self, timeout: float = 0.0) -> bool:
        """Process a single delivery if one arrives within `timeout`. Returns True if one was handled."""
        message = self._queue.dequeue(timeout)
        if message is None:
            return False
        item = parse_message(message)
        job_id = item.job_id
        # The delivery continues the submit's trace (from the message headers); every line logged
        # while it is handled names the job.
        with metrics.busy(), logs.bind(job_id=job_id), tracing.continued(self._queue.trace_context(message)), \
                tracing.span(_tracer, "job" if item.segment is None else "segment", SpanKind.CONSUMER,
                             **{"videojobs.job_id": job_id, "videojobs.worker_id": self.worker_id}):
            try:
                if item.segment is None:
                    self._handle(job_id)
                else:
                    self._handle_segment(item)
            except TemporaryFault as exc:
                # Before the claim (e.g. the database is down): not an attempt; the message comes back later.
                delay = self._policy.backoff.delay(self._queue.delivery_count(message))
                log.warning("job %s: temporary fault before analysis, redelivery in %.1fs: %s", job_id, delay, exc)
                self._queue.nak(message, delay)
        return True

    def publish_capabilities(self) -> bool:
        """Tell the api what this worker can do (model, class names, OCR languages). False if it could not."""
        if self._capabilities is None:
            return True
        try:
            described = self._analyzer.describe()
            self._capabilities.publish(WorkerCapabilities(
                worker_id=self.worker_id, model_file=described.model_file, model_sha256=described.model_sha256,
                class_names=described.class_names, ocr_languages=described.ocr_languages, published_at=utcnow(),
            ))
        except TemporaryFault as exc:
            log.warning("capabilities not published yet: %s", exc)
            return False
        except Exception:  # noqa: BLE001 -- e.g. the model cannot load: jobs will fail with the reason
            log.exception("cannot describe this worker's analyzer; capabilities not published")
        return True

    def run_forever(self) -> None:
        """Loop until stop_event is set; waits on the queue with a growing backoff while idle."""
        with logs.bind(worker_id=self.worker_id), metrics.thread_running():
            self._loop()

    def _loop(self) -> None:
        backoff = self._policy.idle_backoff_min
        published = self.publish_capabilities()
        while not self.stop_event.is_set():
            if not published:
                published = self.publish_capabilities()
            try:
                handled = self.run_once(timeout=backoff)
            except TemporaryFault as exc:  # queue or database unreachable: wait, then try again
                log.warning("worker loop: %s", exc)
                handled = False
                self.stop_event.wait(self._policy.idle_backoff_max)
            except Exception:  # noqa: BLE001 -- a worker must not die on one bad delivery
                log.exception("worker loop error")
                handled = False
                self.stop_event.wait(self._policy.idle_backoff_max)
            backoff = self._policy.idle_backoff_min if handled else min(backoff * 2, self._policy.idle_backoff_max)

    def request_stop(self) -> None:
        self.stop_event.set()

    # -- one delivery ----------------------------------------------------------------------------
    def _handle(self, job_id: str) -> None:
        try:
            job = self._repo.get(job_id)
        except JobNotFound:
            log.warning("job %s: not in the job store, dropping the message", job_id)
            self._queue.term(job_id)
            return
        if job.status.is_final:
            log.info("job %s: already %s, dropping a redelivery", job_id, job.status.value)
            self._queue.ack(job_id)
            return
        if job.is_split:
            # The segments carry the work; this message only matters if the merge is due.
            if job.can_merge() and self._merge_if_due(job, message=job_id):
                return
            if job.merging and not job.lease_expired():
                self._queue.nak(job_id, self._policy.lease.total_seconds())
            else:
                self._queue.ack(job_id)
            return
        if not job.can_be_taken():
            # Another worker holds a live lease: look again once it could have run out.
            self._queue.nak(job_id, self._policy.lease.total_seconds())
            return
        with tracing.span(_tracer, "claim"):
            claimed = self._claim(job)
        if claimed is None:
            self._queue.nak(job_id, self._policy.idle_backoff_max)
            return
        with logs.bind(attempt=claimed.attempt):
            self._run(claimed)

    def _claim(self, job: Job) -> Job | None:
        expected = (job.status, job.attempt)
        # Waiting since it became PENDING, or since the lease of a lost worker ran out.
        waiting_since = job.updated_at if job.status is JobStatus.PENDING else (job.lease_expires_at or job.updated_at)
        job.start(self.worker_id, self._policy.lease)
        if job.crashes >= self._policy.max_attempts:
            self._give_up(job, expected, f"the worker analysing this job was lost {job.crashes} times "
                                         "(crashed or killed); giving up")
            return None
        if not self._repo.save(job, *expected):
            log.info("job %s: another worker claimed it first", job.job_id)
            return None
        waited = max(0.0, (job.updated_at - waiting_since).total_seconds())
        metrics.QUEUE_WAIT.labels(job.pipeline_id).observe(waited)
        log.info("job %s: RUNNING (attempt %d by %s, waited %.1f s)", job.job_id, job.attempt, self.worker_id, waited,
                 extra={"status": job.status.value, "pipeline": job.pipeline_id, "duration_seconds": round(waited, 3)})
        return job

    def _run(self, job: Job) -> None:
        guard = _LeaseKeeper(job, self._repo, self._queue, self._policy, self.stop_event)
        guard.start()
        frames = self._frame_images.for_job(job.job_id) if self._frame_images is not None else None
        guard.frames = frames

        def keep_frame(index: int, image: object) -> None:  # a storage blip waits here, not the whole analysis
            self._in_place(job, guard, lambda: frames(index, image))

        try:
            with contextlib.ExitStack() as stack:
                with _stage(job, "download"):
                    path = stack.enter_context(self._storage.local_copy(job.input_key))
                note = None
                if self._policy.segment_frames > 0:
                    plan = self._analyzer.plan_split(job.pipeline_id, path, job.options, self._policy.segment_frames)
                    if plan is not None and len(plan.ranges) > 1:
                        guard.stop()
                        self._split(job, guard, plan)
                        return
                    note = plan.note if plan is not None else None
                written = self._analyzer.run_to_file(
                    job.pipeline_id, path, job.options, on_progress=guard.progress, should_stop=guard.should_stop,
                    on_frame=keep_frame if frames is not None else None, segmentation_note=note,
                )
            output_key = output_key_for(job.job_id)
            # Same input, options and model give the same bytes, so a repeated write is harmless.
            with written, _stage(job, "store"):
                self._in_place(job, guard, lambda: self._storage.save_file(written.rewound(), output_key))
        except JobInterrupted as exc:
            guard.stop()
            if guard.cancelled:
                self._drop_cancelled(job, guard, str(exc))
            else:
                self._hand_back(job, guard)
            return
        except TemporaryFault as exc:
            guard.stop()
            self._on_temporary_fault(job, guard, exc)
            return
        except _POISON as exc:
            guard.stop()
            reason = ("the job's input is no longer in storage" if isinstance(exc, StorageObjectNotFound)
                      else exc.public_detail)
            log.warning("job %s: poison input: %s", job.job_id, exc)
            if frames is not None:
                frames.discard()
            self._finish(job, guard, lambda: job.fail(reason), poison=True, failure="poison_input")
            return
        except Exception as exc:  # noqa: BLE001 -- every other error ends the job FAILED, never RUNNING
            guard.stop()
            log.exception("job %s: pipeline error", job.job_id)
            if frames is not None:
                frames.discard()
            # The stored message is shown to clients: no paths or hosts, the logs have the detail.
            reason = exc.public_detail if isinstance(exc, VideoJobsError) else (
                f"internal error during analysis ({type(exc).__name__}); the worker's logs have the detail")
            self._finish(job, guard, lambda: job.fail(reason), failure="analysis_error")
            return
        guard.stop()
        self._finish(job, guard, lambda: job.complete(output_key), frames=written.frames)

    # -- outcomes ---------------------------------------------------------------------------------
    def _finish(self, job: Job, guard: "_LeaseKeeper", transition: Callable[[], None], poison: bool = False,
                failure: str = "analysis_error", frames: int = 0, message: str | None = "") -> None:
        """Commit the final status (guarded by the attempt), then ack the delivery.

        `failure` is the kind of reason counted if the job ends FAILED; `frames` the analysed
        frames counted if it ends COMPLETED.
        """
        if guard.cancelled or (not guard.lost and guard.check_cancelled()):
            self._drop_cancelled(job, guard)
            return
        if guard.lost:
            log.warning("job %s: lease lost during attempt %d; leaving the outcome to the new holder", job.job_id, job.attempt)
            return
        with guard.lock:
            transition()
        with tracing.span(_tracer, "final write", **{"videojobs.status": job.status.value}):
            saved = self._in_place(job, guard, lambda: self._repo.save(job, JobStatus.RUNNING, job.attempt))
        if not saved:
            if guard.check_cancelled():  # cancelled (or deleted) between the last check and the write
                self._drop_cancelled(job, guard)
                return
            log.warning("job %s: attempt %d was superseded; outcome discarded", job.job_id, job.attempt)
            return
        self.jobs_processed += 1
        self._record_final(job, time.monotonic() - guard.started, failure, frames)
        message = job.job_id if message == "" else message
        if message is None:  # a merge started after a segment: that message is acked already
            return
        if poison:
            self._queue.term(message)
        else:
            self._queue.ack(message)

    def _drop_cancelled(self, job: Job, guard: "_LeaseKeeper", where: str = "at the end",
                        message: str | None = "") -> None:
        """The owner cancelled (or deleted) the job: write nothing more, remove any results and frame
        images, ack at once."""
        try:
            if guard.frames is not None:
                guard.frames.discard()
            self._storage.delete_file(output_key_for(job.job_id))
            for index in range(job.segments_total):
                self._storage.delete_file(segment_key_of(job.job_id, index))
        except TemporaryFault as exc:
            log.warning("job %s: cancelled, but its results object could not be removed: %s", job.job_id, exc)
        log.info("job %s: cancelled during attempt %d; %s", job.job_id, job.attempt, where)
        message = job.job_id if message == "" else message
        if message is not None:
            self._queue.ack(message)

    def _record_final(self, job: Job, attempt_seconds: float | None, failure: str, frames: int = 0) -> None:
        """Metrics and the one log line of a final transition this worker committed."""
        seconds = max(0.0, (job.updated_at - job.created_at).total_seconds())
        failed = job.status is JobStatus.FAILED
        metrics.observe_final(job.pipeline_id, job.status.value, seconds, attempt_seconds,
                              failure=failure if failed else None, frames=0 if failed else frames)
        extra = {"status": job.status.value, "pipeline": job.pipeline_id, "duration_seconds": round(seconds, 3)}
        attempt_text = ""
        if attempt_seconds is not None:
            extra["attempt_seconds"] = round(attempt_seconds, 3)
            attempt_text = f", attempt {job.attempt}: {attempt_seconds:.1f} s"
        if failed:
            tracing.mark_error(job.error_message or "failed")
            log.warning("job %s: FAILED after %.1f s%s (%s): %s", job.job_id, seconds, attempt_text, failure,
                        job.error_message, extra={**extra, "failure": failure, "error": job.error_message})
        else:
            log.info("job %s: %s in %.1f s%s, %d frame(s)", job.job_id, job.status.value, seconds, attempt_text,
                     frames, extra={**extra, "frames": frames})

    def _hand_back(self, job: Job, guard: "_LeaseKeeper") -> None:
        if guard.lost:
            return
        with guard.lock:
            job.release()
            saved = self._repo.save(job, JobStatus.RUNNING, job.attempt)
        metrics.HANDED_BACK.labels("shutdown").inc()
        log.info("job %s: PENDING (handed back after %.1f s: worker stopping)", job.job_id,
                 time.monotonic() - guard.started, extra={"status": job.status.value})
        if saved:
            self._queue.nak(job.job_id)

    def _outlasted_window(self, streak: FaultStreak, exc: TemporaryFault) -> str | None:
        """The failure reason once a job's or a segment's faults have lasted the fault window, else None."""
        window = self._policy.fault_window
        if streak.faulting_for() < window:
            return None
        minutes = window.total_seconds() / 60
        return f"a backing service stayed unavailable for more than {minutes:g} minutes: {exc.public_detail}"

    def _on_temporary_fault(self, job: Job, guard: "_LeaseKeeper", exc: TemporaryFault) -> None:
        """Hand the job back for a later retry (not an attempt), or fail it once the faults outlast the window."""
        if guard.lost:
            return
        reason = self._outlasted_window(job, exc)
        if reason is not None:
            log.warning("job %s: %s (%s)", job.job_id, reason, exc)
            self._finish(job, guard, lambda: job.fail(reason), failure="fault_window")
            return
        with guard.lock:
            job.release_after_fault()
        metrics.HANDED_BACK.labels("fault").inc()
        delay = self._policy.backoff.delay(job.faults)
        log.warning("job %s: temporary fault %d on attempt %d, retry in %.1fs: %s",
                    job.job_id, job.faults, job.attempt, delay, exc)
        try:
            self._repo.save(job, JobStatus.RUNNING, job.attempt)
        except TemporaryFault:
            pass  # the database is down too: the lease runs out and a redelivery takes the job again
        self._queue.nak(job.job_id, delay)

    def _in_place(self, job: Job, guard: "_LeaseKeeper", step: Callable[[], T]) -> T:
        """Run a step that must not cost the analysis (store results, commit the outcome) until it
        succeeds, retrying temporary faults with a short backoff for up to the fault window while
        the queue message is kept alive."""
        started = time.monotonic()
        failures = 0
        while True:
            try:
                return step()
            except TemporaryFault as exc:
                failures += 1
                if time.monotonic() - started >= self._policy.fault_window.total_seconds() or guard.lost:
                    raise
                delay = self._policy.commit_backoff.delay(failures)
                log.warning("job %s: cannot write yet (%s); retrying in %.1fs", job.job_id, exc, delay)
                try:
                    if guard.message is not None:
                        self._queue.heartbeat(guard.message)
                except TemporaryFault:
                    pass
                time.sleep(delay)

    def _give_up(self, job: Job, expected: tuple[JobStatus, int], reason: str) -> None:
        job.give_up(reason)
        if self._repo.save(job, *expected):
            self._record_final(job, None, "worker_lost")
            self._queue.term(job.job_id)
        else:
            self._queue.nak(job.job_id, self._policy.idle_backoff_max)


    # -- segments of long jobs --------------------------------------------------------------------
    def _split(self, job: Job, guard: "_LeaseKeeper", plan: "SplitPlan") -> None:
        """Write the segments and the split job in one guarded transaction, then publish one
        message per segment and ack the job's. A crash between the two leaves PENDING segments
        without messages: the api's reconciler publishes them again (``stranded_segments``)."""
        parts = [Segment(job.job_id, i, r.first_sample, r.end_sample, r.first_frame, r.last_frame)
                 for i, r in enumerate(plan.ranges)]
        attempt = job.attempt
        if guard.cancelled or guard.check_cancelled():
            self._drop_cancelled(job, guard)
            return
        job.split(len(parts), plan.samples)
        saved = self._in_place(job, guard, lambda: self._repo.split(job, parts, attempt))
        if not saved:
            if guard.check_cancelled():
                self._drop_cancelled(job, guard)
            else:
                log.warning("job %s: attempt %d was superseded before its split", job.job_id, attempt)
            return
        log.info("job %s: split into %d segments of about %d sampled frames (%d in all)", job.job_id, len(parts),
                 parts[0].frames_total, plan.samples, extra={"segments": len(parts)})
        metrics.SEGMENTS.labels("PENDING").inc(len(parts))
        try:
            for part in parts:
                self._queue.enqueue(segment_message(job.job_id, part.index))
        except TemporaryFault as exc:
            log.warning("job %s: segments not all published (the reconciler will): %s", job.job_id, exc)
        self._queue.ack(job.job_id)

    def _handle_segment(self, item: WorkItem) -> None:
        message = item.message
        assert item.segment is not None
        try:
            job = self._repo.get(item.job_id)
            segment = self._repo.get_segment(item.job_id, item.segment)
        except JobNotFound:
            log.warning("job %s: segment %d not in the job store, dropping the message", item.job_id, item.segment)
            self._queue.term(message)
            return
        if job.status.is_final:
            self._queue.ack(message)
            return
        if segment.status is SegmentStatus.DONE:
            self._queue.ack(message)
            self._merge_if_due(job)  # the worker that finished it may have stopped before the merge
            return
        if not segment.can_be_taken():
            self._queue.nak(message, self._policy.lease.total_seconds())
            return
        expected = (segment.status, segment.attempt)
        segment.start(self.worker_id, self._policy.lease)
        if segment.crashes >= self._policy.max_attempts:
            self._fail_job(job, f"the worker analysing {segment.frame_range} (segment {segment.index}) was lost "
                                f"{segment.crashes} times (crashed or killed); giving up", message, "worker_lost")
            return
        if not self._repo.save_segment(segment, *expected):
            self._queue.nak(message, self._policy.idle_backoff_max)
            return
        log.info("job %s: segment %d (%s) RUNNING (attempt %d by %s)", job.job_id, segment.index,
                 segment.frame_range, segment.attempt, self.worker_id)
        with logs.bind(attempt=segment.attempt):
            self._run_segment(job, segment, message)

    def _run_segment(self, job: Job, segment: Segment, message: str) -> None:
        guard = _LeaseKeeper(segment, self._repo, self._queue, self._policy, self.stop_event, message=message,
                             write=lambda: self._repo.save_segment(segment, SegmentStatus.RUNNING, segment.attempt))
        guard.start()
        frames = self._frame_images.for_job(job.job_id) if self._frame_images is not None else None
        guard.frames = frames

        def keep_frame(index: int, image: object) -> None:
            self._in_place(job, guard, lambda: frames(index, image))

        try:
            with contextlib.ExitStack() as stack:
                with _stage(job, "download"):
                    path = stack.enter_context(self._storage.local_copy(job.input_key))
                data = self._analyzer.run_segment(
                    job.pipeline_id, path, job.options, segment.first_sample, segment.end_sample,
                    on_progress=guard.progress, should_stop=guard.should_stop,
                    on_frame=keep_frame if frames is not None else None)
            with _stage(job, "store"):
                self._in_place(job, guard, lambda: self._storage.save_bytes(data, segment.output_key))
        except JobInterrupted:
            guard.stop()
            if guard.cancelled:
                self._drop_segment(job, guard, message)
            else:
                self._hand_back_segment(segment, guard, message, fault=False)
            return
        except TemporaryFault as exc:
            guard.stop()
            self._on_segment_fault(job, segment, guard, message, exc)
            return
        except Exception as exc:  # noqa: BLE001 -- poison range or pipeline error: the job fails with the range
            guard.stop()
            if frames is not None:
                frames.discard()
            if not (isinstance(exc, _POISON) and job.options.on_bad_frames == "skip"):
                self._fail_segment(job, segment, message, exc)
                return
            # on_bad_frames=skip: the range is left out and listed in the results
            log.warning("job %s: segment %d (%s) skipped: %s", job.job_id, segment.index, segment.frame_range, exc)
            skipped = SkippedSegment.of(segment, exc.public_detail).to_bytes()
            try:
                self._in_place(job, guard, lambda: self._storage.save_bytes(skipped, segment.output_key))
            except TemporaryFault as fault:
                self._on_segment_fault(job, segment, guard, message, fault)
                return
        guard.stop()
        if guard.cancelled or (not guard.lost and guard.check_cancelled()):
            self._drop_segment(job, guard, message, segment.output_key)
            return
        if guard.lost:
            log.warning("job %s: segment %d: lease lost during attempt %d", job.job_id, segment.index, segment.attempt)
            return
        attempt = segment.attempt
        with guard.lock:
            segment.finish()
        saved = self._in_place(job, guard, lambda: self._repo.save_segment(segment, SegmentStatus.RUNNING, attempt))
        if not saved:
            log.warning("job %s: segment %d: attempt %d was superseded", job.job_id, segment.index, attempt)
            return
        metrics.SEGMENTS.labels("DONE").inc()
        log.info("job %s: segment %d DONE in %.1f s", job.job_id, segment.index, time.monotonic() - guard.started)
        self._queue.ack(message)
        self._merge_if_due(job)

    def _fail_segment(self, job: Job, segment: Segment, message: str, exc: Exception) -> None:
        """A poison range or a pipeline error: the whole job FAILED, naming the segment's range."""
        if isinstance(exc, _POISON):
            log.warning("job %s: segment %d: poison input: %s", job.job_id, segment.index, exc)
            reason = exc.public_detail
            failure = "poison_input"
        else:
            log.exception("job %s: segment %d: pipeline error", job.job_id, segment.index, exc_info=exc)
            reason = exc.public_detail if isinstance(exc, VideoJobsError) else (
                f"internal error during analysis ({type(exc).__name__}); the worker's logs have the detail")
            failure = "analysis_error"
        self._fail_job(job, f"{segment.frame_range} (segment {segment.index}): {reason}", message, failure,
                       poison=failure == "poison_input")

    def _drop_segment(self, job: Job, guard: "_LeaseKeeper", message: str, key: str | None = None) -> None:
        """The job was cancelled, deleted or failed (another segment) while this segment ran: remove
        what this attempt wrote (frame images, its output `key`) and ack."""
        try:
            if guard.frames is not None:
                guard.frames.discard()
            if key is not None:
                self._storage.delete_file(key)
        except TemporaryFault as exc:
            log.warning("job %s: dropped segment's objects not removed: %s", job.job_id, exc)
        log.info("job %s: no longer running; segment dropped", job.job_id)
        self._queue.ack(message)

    def _on_segment_fault(self, job: Job, segment: Segment, guard: "_LeaseKeeper", message: str,
                          exc: TemporaryFault) -> None:
        """Hand the segment back for a later retry (not an attempt), or fail the job once the
        segment's faults outlast the window, as a job's do."""
        if guard.lost:
            return
        reason = self._outlasted_window(segment, exc)
        if reason is not None:
            log.warning("job %s: segment %d: %s (%s)", job.job_id, segment.index, reason, exc)
            self._fail_job(job, f"{segment.frame_range} (segment {segment.index}): {reason}", message,
                           "fault_window")
            return
        log.warning("job %s: segment %d: temporary fault %d: %s", job.job_id, segment.index, segment.faults + 1, exc)
        self._hand_back_segment(segment, guard, message, fault=True)

    def _hand_back_segment(self, segment: Segment, guard: "_LeaseKeeper", message: str, fault: bool) -> None:
        """RUNNING -> PENDING and the message back to the queue: at once when the worker stops, after
        the backoff of the segment's fault streak when a backing service failed (`fault`)."""
        if guard.lost:
            return
        attempt = segment.attempt
        why = "fault" if fault else "shutdown"
        with guard.lock:
            if fault:
                segment.release_after_fault()
            else:
                segment.release()
        delay = self._policy.backoff.delay(segment.faults) if fault else 0.0
        try:
            saved = self._repo.save_segment(segment, SegmentStatus.RUNNING, attempt)
        except TemporaryFault:
            saved = True  # the lease runs out and a redelivery takes it again
        metrics.HANDED_BACK.labels(why).inc()
        log.info("job %s: segment %d PENDING (handed back: %s)", segment.job_id, segment.index, why)
        if saved:
            self._queue.nak(message, delay)

    def _fail_job(self, job: Job, reason: str, message: str | None, failure: str, poison: bool = False) -> None:
        """A segment cannot be analysed: the whole job FAILED with the segment's range (guarded by the
        job's attempt as it is stored; re-read if a merge claim or a progress write got there first)."""
        for _ in range(5):
            if job.status.is_final:
                break
            expected = (job.status, job.attempt)
            job.give_up(reason)
            if self._repo.save(job, *expected):
                self.jobs_processed += 1
                self._record_final(job, None, failure)
                self._remove_segment_objects(job)
                break
            job = self._repo.get(job.job_id)
        if message is not None:
            (self._queue.term if poison else self._queue.ack)(message)

    def _remove_segment_objects(self, job: Job) -> None:
        for index in range(job.segments_total):
            try:
                self._storage.delete_file(segment_key_of(job.job_id, index))
            except TemporaryFault as exc:  # retention removes what is left with the job
                log.warning("job %s: segment objects not removed yet: %s", job.job_id, exc)
                return

    def _merge_if_due(self, job: Job, message: str | None = None) -> bool:
        """Once every segment is DONE: take the merge (compare-and-set on the job's attempt, so
        exactly one worker merges) and write the whole job's results. True if this worker merged."""
        try:
            job = self._repo.get(job.job_id)
            if not job.can_merge():
                return False
            parts = self._repo.segments(job.job_id)
        except (JobNotFound, TemporaryFault) as exc:
            log.warning("job %s: merge not attempted: %s", job.job_id, exc)
            return False
        if len(parts) != job.segments_total or any(p.status is not SegmentStatus.DONE for p in parts):
            return False
        expected = (job.status, job.attempt)
        job.start_merge(self.worker_id, self._policy.lease)
        if job.crashes >= self._policy.max_attempts:
            self._give_up(job, expected, f"the worker merging this job's segments was lost {job.crashes} times")
            return True
        if not self._repo.save(job, *expected):
            return False
        log.info("job %s: merging %d segments (attempt %d by %s)", job.job_id, len(parts), job.attempt, self.worker_id)
        with logs.bind(attempt=job.attempt):
            self._run_merge(job, parts, message)
        return True

    def _run_merge(self, job: Job, parts: list[Segment], message: str | None) -> None:
        guard = _LeaseKeeper(job, self._repo, self._queue, self._policy, self.stop_event, message=message)
        guard.start()
        output_key = output_key_for(job.job_id)
        try:
            with _stage(job, "merge"):
                # Read one at a time, as the merge asks for them: a long job's outputs are never all in memory.
                outputs = (self._in_place(job, guard, lambda key=p.output_key: self._storage.read_bytes(key))
                           for p in parts)
                merged = self._analyzer.merge_segments(job.pipeline_id, job.options, outputs)
            with merged, _stage(job, "store"):
                self._in_place(job, guard, lambda: self._storage.save_file(merged.rewound(), output_key))
        except TemporaryFault as exc:
            guard.stop()
            if not guard.lost:
                log.warning("job %s: merge hit a temporary fault, handed back: %s", job.job_id, exc)
                with guard.lock:
                    job.release_merge()
                try:
                    self._repo.save(job, JobStatus.RUNNING, job.attempt)
                except TemporaryFault:
                    pass
            if message is not None:
                self._queue.nak(message, self._policy.backoff.delay(1))
            return
        except Exception as exc:  # noqa: BLE001 -- a missing or unreadable segment output ends the job FAILED
            guard.stop()
            log.exception("job %s: merge failed", job.job_id)
            reason = exc.public_detail if isinstance(exc, VideoJobsError) else (
                f"internal error while merging segments ({type(exc).__name__}); the worker's logs have the detail")
            self._finish(job, guard, lambda: job.fail(reason), failure="analysis_error", message=message)
            self._remove_segment_objects(job)
            return
        guard.stop()
        self._finish(job, guard, lambda: job.complete(output_key), frames=merged.frames, message=message)
        if job.status is JobStatus.COMPLETED:
            self._remove_segment_objects(job)


class _LeaseKeeper:
    """While a job runs: heartbeats the queue, extends the lease, records progress.

    If a guarded write finds the row changed, the lease is lost: the pipeline is
    told to stop and nothing more is written by this attempt. ``should_stop`` (polled
    between batches) also reads the job's status, so a cancel stops the pipeline
    within one batch; ``cancelled`` then tells the worker to ack instead of hand back.
    """

    def __init__(
        self,
        job: "Job | Segment",
        repo: JobRepository,
        queue: QueueService,
        policy: WorkerPolicy,
        stop_event: threading.Event,
        message: str | None = "",
        write: Callable[[], bool] | None = None,
    ) -> None:
        # `job` is what the lease is on: a job, or a segment (then `write` saves it, and the job
        # ending in any final state, not only a cancel, stops it). `message` is the queue message
        # heartbeats keep alive (default the job id; None: none in flight).
        self._job = job
        self._segment = isinstance(job, Segment)
        self._message = job.job_id if message == "" else message
        self._save = write or (lambda: self._repo.save(self._job, JobStatus.RUNNING, self._job.attempt))
        self._repo = repo
        self._queue = queue
        self._policy = policy
        self._worker_stop = stop_event
        self._done = threading.Event()
        # In the job's context: its heartbeat lines carry the job, attempt and trace ids.
        self._thread = threading.Thread(target=logs.in_current_context(self._beat), name=f"lease-{job.job_id[:8]}",
                                        daemon=True)
        self._last_progress_write = 0.0
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.frames: "JobFrameImages | None" = None  # frame images this attempt kept (discarded if it is dropped)
        self.lost = False
        self.cancelled = False

    @property
    def message(self) -> str | None:
        return self._message

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def should_stop(self) -> bool:
        return self.lost or self._worker_stop.is_set() or self.check_cancelled()

    def check_cancelled(self) -> bool:
        """True (and the lease counts as lost) once the job was cancelled or deleted by its owner."""
        if self.cancelled:
            return True
        try:
            status = self._repo.get(self._job.job_id).status
        except JobNotFound:
            status = JobStatus.CANCELLED
        except TemporaryFault as exc:
            log.warning("job %s: cannot check for a cancel: %s", self._job.job_id, exc)
            return False
        if status is JobStatus.CANCELLED or (self._segment and status.is_final):
            self.cancelled = self.lost = True
        return self.cancelled

    def progress(self, frames_done: int, frames_total: int) -> None:
        now = time.monotonic()
        final = frames_total and frames_done >= frames_total
        if not final and now - self._last_progress_write < self._policy.progress_interval_seconds:
            return
        self._last_progress_write = now
        with self.lock:
            if self.lost:
                return
            self._job.report_progress(frames_done, frames_total)
            self._write()

    def _beat(self) -> None:
        while not self._done.wait(self._policy.heartbeat_seconds):
            try:
                if self._message is not None:
                    self._queue.heartbeat(self._message)
                with self.lock:
                    if self.lost:
                        return
                    self._job.extend_lease(self._policy.lease)
                    self._write()
            except TemporaryFault as exc:
                log.warning("job %s: heartbeat failed: %s", self._job.job_id, exc)

    def _write(self) -> None:
        try:
            ok = self._save()
        except TemporaryFault as exc:
            log.warning("job %s: progress not saved: %s", self._job.job_id, exc)
            return
        if not ok and not self.check_cancelled():
            log.warning("job %s: lease lost (attempt %d superseded)", self._job.job_id, self._job.attempt)
            self.lost = True


@contextlib.contextmanager
def _stage(job: Job, stage: str) -> Iterator[None]:
    """A stage of the job outside the pipeline (download, store): a span, and its seconds once it succeeded."""
    start = time.perf_counter()
    with tracing.span(_tracer, stage):
        yield
    metrics.observe_stage(job.pipeline_id, stage, time.perf_counter() - start)


def hand_back_orphans(repo: JobRepository) -> int:
    """Embedded start-up: this process is the only worker, so any RUNNING job (or segment, or merge)
    is an orphan of a dead one."""
    count = 0
    for job_id in repo.unfinished_job_ids():
        job = repo.get(job_id)
        if job.is_split:
            for segment in repo.segments(job_id):
                if segment.status is SegmentStatus.RUNNING:
                    attempt = segment.attempt
                    segment.release()
                    count += repo.save_segment(segment, SegmentStatus.RUNNING, attempt)
            if job.merging:
                job.release_merge()
                count += repo.save(job, JobStatus.RUNNING, job.attempt)
            continue
        if job.status is JobStatus.RUNNING:
            attempt = job.attempt
            job.release()
            if repo.save(job, JobStatus.RUNNING, attempt):
                count += 1
    return count


def unfinished_messages(repo: JobRepository) -> list[str]:
    """Embedded start-up: the queue messages that rebuild the in-process queue from the job store
    (every unfinished job, and every unfinished segment of a split one)."""
    messages = []
    for job_id in repo.unfinished_job_ids():
        messages.append(job_id)
        job = repo.get(job_id)
        if job.is_split:
            messages.extend(segment_message(job_id, s.index) for s in repo.segments(job_id)
                            if s.status is not SegmentStatus.DONE)
    return messages
