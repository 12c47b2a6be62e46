"""Outbox relay: publishes committed publish intents to the queue, so no accepted job is lost or stuck.

The job row and its outbox row are written in one transaction. The relay hands
each unpublished job id to the queue (which drops duplicates by job id) and
then stamps it published. If the queue is down, the rows wait and the next
pass publishes them.

It also reconciles: a job can lose its message after it was published (the
queue gave up redelivering, a queue was rebuilt empty). When the queue has no
backlog, unfinished jobs that nothing touched for `stranded_after` (PENDING not
updated, or RUNNING with a lease that ran out) are published again. Workers
treat duplicates safely (the claim is a compare-and-set; final jobs are dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from videojobs.common.errors import TemporaryFault
from videojobs.common.job import utcnow
from videojobs.common.ports.jobs import JobRepository
from videojobs.common.ports.queue import QueueService

log = logging.getLogger(__name__)


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
                    ids = self._repo.unpublished_job_ids(batch)
                except TemporaryFault as exc:
                    log.warning("outbox: cannot read publish intents: %s", exc)
                    return published
                if not ids:
                    return published
                done: list[str] = []
                try:
                    for job_id in ids:
                        self._queue.enqueue(job_id)
                        done.append(job_id)
                except TemporaryFault as exc:
                    log.warning("outbox: queue unavailable, %d job(s) wait: %s", len(ids) - len(done), exc)
                finally:
                    if done:
                        try:
                            self._repo.mark_published(done)
                        except TemporaryFault as exc:  # republished later; the queue drops duplicates
                            log.warning("outbox: cannot stamp published: %s", exc)
                published += len(done)
                if len(done) < len(ids) or len(ids) < batch:
                    return published

    def republish_stranded(self, batch: int = 100) -> int:
        """One reconcile pass; only while the queue has no backlog, so duplicates stay bounded."""
        try:
            if self._queue.size() > 0:
                return 0
            ids = self._repo.stranded_job_ids(utcnow() - self._stranded_after, batch)
            for job_id in ids:
                self._queue.enqueue(job_id)
        except TemporaryFault as exc:
            log.warning("reconcile: skipped: %s", exc)
            return 0
        if ids:
            log.warning("reconcile: republished %d stranded job(s): %s", len(ids), ", ".join(ids[:10]))
        return len(ids)

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
                    self.republish_stranded()
            except Exception:  # noqa: BLE001 -- the relay must outlive any one bad pass
                log.exception("outbox relay pass failed")
            self._wake.wait(self._interval)
            self._wake.clear()
