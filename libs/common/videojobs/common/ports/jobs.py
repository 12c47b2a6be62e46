"""JobRepository: where Job entities are kept (SQLite embedded, Postgres in production)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from videojobs.common.job import Job, JobStatus


class JobRepository(ABC):
    """Persistence of Job entities with optimistic guards.

    Every write after submit is a compare-and-set on (status, attempt) as they
    were when the caller read the job, so a worker that lost its lease cannot
    overwrite the outcome of the attempt that replaced it.
    """

    @abstractmethod
    def add(self, job: Job) -> None:
        """Insert a new job and its publish intent (outbox row) in one transaction."""
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

    @abstractmethod
    def mark_published(self, job_ids: list[str]) -> None:
        """Record that these jobs were handed to the queue."""
        raise NotImplementedError

    @abstractmethod
    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        raise NotImplementedError
