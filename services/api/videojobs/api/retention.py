"""Retention: the api removes inputs of final jobs, then whole final jobs, once they are old enough.

One sweeper at a time across api replicas (a Postgres advisory lock; an in-process
lock on SQLite), in bounded batches. Objects go first, then the row, so a crash in
between leaves a row the next pass finishes, never an object nobody can find.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from videojobs.api.service import remove_job_objects
from videojobs.common.errors import TemporaryFault
from videojobs.common.job import utcnow
from videojobs.common.ports.jobs import JobRepository
from videojobs.common.ports.storage import StorageService

log = logging.getLogger(__name__)

# Idempotency keys live 24 h; settled notices are kept as long as jobs, at least a day.
_MIN_RECORD_AGE = timedelta(hours=24)


@dataclass
class SweepReport:
    ran: bool = False
    inputs_removed: int = 0
    jobs_removed: int = 0
    records_purged: int = 0


class RetentionSweeper:
    def __init__(self, repo: JobRepository, storage: StorageService, retention: timedelta,
                 input_retention: timedelta, interval_seconds: float = 60.0, batch: int = 100,
                 max_batches: int = 10) -> None:
        self._repo = repo
        self._storage = storage
        self._retention = retention
        self._input_retention = input_retention
        self._interval = interval_seconds
        self._batch = batch
        self._max_batches = max_batches
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self, now: datetime | None = None) -> SweepReport:
        """One pass, if no other sweeper holds the lock; at most max_batches batches of each kind."""
        now = now or utcnow()
        report = SweepReport()
        with self._repo.exclusive("retention") as mine:
            if not mine:
                return report
            report.ran = True
            for _ in range(self._max_batches):
                jobs = self._repo.expired_inputs(now - self._input_retention, self._batch)
                for job in jobs:
                    self._storage.delete_file(job.input_key)
                    self._repo.mark_input_deleted(job.job_id, now)
                report.inputs_removed += len(jobs)
                if len(jobs) < self._batch:
                    break
            for _ in range(self._max_batches):
                jobs = self._repo.expired_jobs(now - self._retention, self._batch)
                for job in jobs:
                    remove_job_objects(self._storage, job)
                    report.jobs_removed += int(self._repo.delete(job.job_id, job.status))
                if len(jobs) < self._batch:
                    break
            report.records_purged = self._repo.purge_before(now - max(self._retention, _MIN_RECORD_AGE))
        if report.inputs_removed or report.jobs_removed:
            log.info("retention: removed %d input(s) and %d job(s)", report.inputs_removed, report.jobs_removed)
        return report

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sweep_once()
            except TemporaryFault as exc:
                log.warning("retention: skipped a pass: %s", exc)
            except Exception:  # noqa: BLE001 -- the sweeper must outlive any one bad pass
                log.exception("retention pass failed")
