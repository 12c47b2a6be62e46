"""JobRepository: where Job entities are kept (SQLite embedded, Postgres in production)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping

from videojobs.common.job import Job, JobStatus


@dataclass(frozen=True)
class PublishIntent:
    """An outbox row: a job id to hand to the queue, with the trace context of its submit."""

    job_id: str
    trace_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Backlog:
    """What is waiting, sampled for the metrics: unfinished jobs and unpublished outbox rows."""

    pending: int = 0
    running: int = 0
    lease_expired: int = 0  # RUNNING jobs whose lease ran out (their worker is likely gone)
    oldest_pending_at: datetime | None = None
    outbox_unpublished: int = 0
    oldest_unpublished_at: datetime | None = None


class JobRepository(ABC):
    """Persistence of Job entities with optimistic guards.

    Every write after submit is a compare-and-set on (status, attempt) as they
    were when the caller read the job, so a worker that lost its lease cannot
    overwrite the outcome of the attempt that replaced it.
    """

    @abstractmethod
    def add(self, job: Job, trace_context: Mapping[str, str] | None = None) -> None:
        """Insert a new job and its publish intent (outbox row) in one transaction.

        `trace_context` (W3C traceparent/tracestate of the submit) is kept with the
        intent, so the queue message and the worker continue the submit's trace.
        """
        raise NotImplementedError

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """Load a job, or raise JobNotFound."""
        raise NotImplementedError

    @abstractmethod
    def save(self, job: Job, expected_status: JobStatus, expected_attempt: int) -> bool:
        """Write `job` only if the stored row still has (expected_status, expected_attempt).

        Returns False (and writes nothing) if another writer got there first.
        """
        raise NotImplementedError

    @abstractmethod
    def unfinished_job_ids(self) -> list[str]:
        """Ids of PENDING and RUNNING jobs, oldest first."""
        raise NotImplementedError

    @abstractmethod
    def stranded_job_ids(self, idle_since: datetime, limit: int = 100) -> list[str]:
        """Unfinished jobs nothing has touched since `idle_since`: PENDING ones not updated
        since then, RUNNING ones whose lease ran out before then. Oldest first."""
        raise NotImplementedError

    @abstractmethod
    def unpublished_job_ids(self, limit: int = 100) -> list[str]:
        """Job ids whose publish intent (outbox row) is not yet marked published, oldest first."""
        raise NotImplementedError

    def unpublished(self, limit: int = 100) -> list[PublishIntent]:
        """Publish intents not yet marked published, oldest first, with their trace context."""
        return [PublishIntent(job_id) for job_id in self.unpublished_job_ids(limit)]

    def backlog(self, now: datetime) -> Backlog:
        """Counts of unfinished jobs and unpublished intents, and the oldest of each (for the metrics)."""
        raise NotImplementedError

    @abstractmethod
    def mark_published(self, job_ids: list[str]) -> None:
        """Record that these jobs were handed to the queue."""
        raise NotImplementedError

    @abstractmethod
    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        raise NotImplementedError
