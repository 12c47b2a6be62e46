"""Outbox relay: publishes committed publish intents to the queue, so no accepted job is lost or stuck.

The job row and its outbox row are written in one transaction. The relay hands
each unpublished job id to the queue (which drops duplicates by job id) and
then stamps it published. If the queue is down, the rows wait and the next
pass publishes them.

It also reconciles: a job can lose its message after it was published (the
queue gave up redelivering, a queue was rebuilt empty). Messages the queue gave
up on are reclaimed (removed; their unfinished jobs published again) and messages
of final jobs purged, so none stays dead in the stream. When the queue has no
backlog, unfinished jobs that nothing touched for `stranded_after` (PENDING not
updated, or RUNNING with a lease that ran out) are published again, each under a
new message id so duplicate detection cannot swallow it. Workers treat
duplicates safely (the claim is a compare-and-set; final jobs are dropped).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta

from opentelemetry.trace import SpanKind

from videojobs.common.errors import JobNotFound, TemporaryFault
from videojobs.common.job import utcnow
from videojobs.common.observability import tracing
from videojobs.common.ports.jobs import JobRepository
from videojobs.common.ports.queue import QueueService
from videojobs.common.segments import SegmentStatus, parse_message, segment_message

log = logging.getLogger(__name__)
_tracer = tracing.tracer(__name__)


def fresh_message_id(job_id: str) -> str:
    """A message id for a republish that the queue's duplicate detection must not drop."""
    return f"{job_id}.{uuid.uuid4().hex[:12]}"


class OutboxRelay:
    def __init__(
        self,
        repo: JobRepository,
        queue: QueueService,
        interval_seconds: float = 1.0,
        stranded_after: timedelta = timedelta(minutes=5),
        reconcile_every_seconds: float = 60.0,
    ) -> None:
        self._repo = repo
        self._queue = queue
        self._interval = interval_seconds
        self._stranded_after = stranded_after
        self._reconcile_every = reconcile_every_seconds
        self._last_reconcile = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def publish_pending(self, batch: int = 100) -> int:
        """One pass: publish what is waiting. Returns how many were published."""
        published = 0
        with self._lock:
            while True:
                try:
                    intents = self._repo.unpublished(batch)
                except TemporaryFault as exc:
                    log.warning("outbox: cannot read publish intents: %s", exc)
                    return published
                if not intents:
                    return published
                done: list[str] = []
                try:
                    for intent in intents:
                        self._publish(intent.job_id, intent.trace_context)
                        done.append(intent.job_id)
                except TemporaryFault as exc:
                    log.warning("outbox: queue unavailable, %d job(s) wait: %s", len(intents) - len(done), exc)
                finally:
                    if done:
                        try:
                            self._repo.mark_published(done)
                        except TemporaryFault as exc:  # republished later; the queue drops duplicates
                            log.warning("outbox: cannot stamp published: %s", exc)
                published += len(done)
                if len(done) < len(intents) or len(intents) < batch:
                    return published

    def _publish(self, job_id: str, trace_context: dict[str, str]) -> None:
        """Hand one intent to the queue, continuing the trace of its submit."""
        with tracing.continued(trace_context), \
                tracing.span(_tracer, "outbox publish", SpanKind.PRODUCER, **{"videojobs.job_id": job_id}):
            self._queue.enqueue(job_id, trace_context=tracing.inject())

    def republish_stranded(self, batch: int = 100) -> int:
        """One reconcile pass; only while the queue has no backlog, so duplicates stay bounded.

        Each republish carries a new message id: the queue would drop a message whose id
        it saw within its duplicate window, and this one must arrive.
        """
        try:
            if self._queue.size() > 0:
                return 0
            idle_since = utcnow() - self._stranded_after
            ids = self._repo.stranded_job_ids(idle_since, batch)
            # Segments of split jobs: PENDING ones whose message was lost (e.g. the splitting worker
            # died before publishing them), RUNNING ones whose worker is gone.
            ids += [segment_message(job_id, index) for job_id, index in self._repo.stranded_segments(idle_since, batch)]
            published = [message for message in ids if self._queue.enqueue(message, fresh_message_id(message))]
        except TemporaryFault as exc:
            log.warning("reconcile: skipped: %s", exc)
            return 0
        if published:
            log.warning("reconcile: republished %d stranded job(s): %s", len(published), ", ".join(published[:10]))
        return len(published)

    def reclaim_dead_messages(self) -> int:
        """Messages the queue gave up delivering: their unfinished jobs are published again, and
        messages of jobs already final are removed, so nothing is left stuck or dead."""
        try:
            dead = self._queue.reclaim_dead()
            republished = []
            for message in dead:
                if self._is_final(message):
                    continue
                if self._queue.enqueue(message, fresh_message_id(message)):
                    republished.append(message)
            purged = self._queue.purge(self._is_final)
        except TemporaryFault as exc:
            log.warning("reconcile: dead messages not reclaimed yet: %s", exc)
            return 0
        if dead:
            log.warning("queue gave up delivering %d message(s); republished %d unfinished job(s): %s",
                        len(dead), len(republished), ", ".join(republished[:10]))
        if purged:
            log.info("removed %d queue message(s) of jobs already final", purged)
        return len(republished)

    def _is_final(self, message: str) -> bool:
        """Nothing left to deliver for this message: its job is final (or gone), or its segment is DONE."""
        item = parse_message(message)
        try:
            if self._repo.get(item.job_id).status.is_final:
                return True
            if item.segment is not None:
                return self._repo.get_segment(item.job_id, item.segment).status is SegmentStatus.DONE
            return False
        except JobNotFound:
            return True  # no such job any more: nothing to deliver

    def kick(self) -> None:
        """Ask the background loop for a pass now (after a submit)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.publish_pending()
                if time.monotonic() - self._last_reconcile >= self._reconcile_every:
                    self._last_reconcile = time.monotonic()
                    self.reclaim_dead_messages()
                    self.republish_stranded()
            except Exception:  # noqa: BLE001 -- the relay must outlive any one bad pass
                log.exception("outbox relay pass failed")
            self._wake.wait(self._interval)
            self._wake.clear()
