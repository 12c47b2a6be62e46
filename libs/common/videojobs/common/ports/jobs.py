"""JobRepository: where Job entities are kept (SQLite embedded, Postgres in production)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator, Mapping

from videojobs.common.job import Job, JobStatus
from videojobs.common.segments import Segment, SegmentStatus


@dataclass(frozen=True)
class SubmitRecord:
    """The idempotency key of a submit and the fingerprint of what it asked for."""

    request_id: str
    fingerprint: str


@dataclass(frozen=True)
class PriorSubmit:
    """The job an idempotency key already created, and that request's fingerprint."""

    job_id: str
    fingerprint: str


@dataclass(frozen=True)
class AdmissionLimits:
    """Bounds checked in the transaction that adds a job (0 = no bound)."""

    max_active_per_tenant: int = 0
    max_pending: int = 0


@dataclass(frozen=True)
class ListCursor:
    """Keyset position of a listing: the last job of the previous page (newest first)."""

    created_at: datetime
    job_id: str


class RequestIdTaken(Exception):
    """add(): the tenant's idempotency key already names a job (created inside the window)."""

    def __init__(self, prior: PriorSubmit) -> None:
        super().__init__(prior.job_id)
        self.prior = prior


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
    """Persistence of Job entities with optimistic guards and tenant ownership.

    Every write after submit is a compare-and-set on (status, attempt) as they
    were when the caller read the job, so a worker that lost its lease cannot
    overwrite the outcome of the attempt that replaced it, and nothing overwrites
    a final state. Reads on behalf of a client (``get_owned``, ``list_owned``) are
    filtered by tenant: another tenant's job does not exist for the caller.
    ``get`` is the system read of the worker and the relay.
    """

    @abstractmethod
    def add(self, job: Job, request: SubmitRecord | None = None, limits: AdmissionLimits | None = None,
            request_window_start: datetime | None = None, trace_context: Mapping[str, str] | None = None) -> None:
        """Insert a new job and its publish intent (outbox row) in one transaction.

        With `request`, the (tenant, request_id) pair is recorded with the job; if it
        already names a job created at or after `request_window_start`, nothing is
        written and RequestIdTaken says which. With `limits`, the tenant's PENDING +
        RUNNING jobs and all PENDING jobs are counted in that transaction and
        TooManyJobs raised when a bound is reached. `trace_context` (W3C
        traceparent/tracestate of the submit) is kept with the intent, so the queue
        message and the worker continue the submit's trace.
        """
        raise NotImplementedError

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """Load a job whoever owns it (workers, relay), or raise JobNotFound."""
        raise NotImplementedError

    @abstractmethod
    def get_owned(self, tenant_id: str, job_id: str) -> Job:
        """Load a job of `tenant_id`, or raise JobNotFound (also for another tenant's job)."""
        raise NotImplementedError

    @abstractmethod
    def list_owned(self, tenant_id: str, status: JobStatus | None, limit: int,
                   after: ListCursor | None = None) -> list[Job]:
        """The tenant's jobs, newest first (created_at, then job_id, descending), after `after`."""
        raise NotImplementedError

    @abstractmethod
    def find_request(self, tenant_id: str, request_id: str, since: datetime) -> PriorSubmit | None:
        """The job the tenant's idempotency key created at or after `since`, if any."""
        raise NotImplementedError

    @abstractmethod
    def save(self, job: Job, expected_status: JobStatus, expected_attempt: int) -> bool:
        """Write `job` only if the stored row still has (expected_status, expected_attempt).

        Returns False (and writes nothing) if another writer got there first. Events
        the job raised (a final state with a callback URL) are written to the
        webhook outbox in the same transaction, and cleared from the entity.
        """
        raise NotImplementedError

    @abstractmethod
    def delete(self, job_id: str, expected_status: JobStatus) -> bool:
        """Remove a job row (and its outbox and idempotency rows) if its status is still `expected_status`."""
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
    def admission_counts(self, tenant_id: str) -> tuple[int, int]:
        """(the tenant's PENDING + RUNNING jobs, all PENDING jobs)."""
        raise NotImplementedError

    # -- where a job stands -----------------------------------------------------------------
    @abstractmethod
    def pending_ahead(self, job: Job) -> int:
        """PENDING jobs (any tenant) created before `job`: its place in the queue."""
        raise NotImplementedError

    @abstractmethod
    def recent_run_seconds(self, limit: int = 20) -> list[float]:
        """Run times (started to finished) of the most recently COMPLETED jobs."""
        raise NotImplementedError

    @abstractmethod
    def running_count(self) -> int:
        """RUNNING jobs now (how many run side by side)."""
        raise NotImplementedError

    # -- retention ------------------------------------------------------------------------------
    @abstractmethod
    def expired_inputs(self, finished_before: datetime, limit: int) -> list[Job]:
        """Final jobs finished before the cutoff whose uploaded input is still stored."""
        raise NotImplementedError

    @abstractmethod
    def mark_input_deleted(self, job_id: str, at: datetime) -> None:
        raise NotImplementedError

    @abstractmethod
    def expired_jobs(self, finished_before: datetime, limit: int) -> list[Job]:
        """Final jobs finished before the cutoff, oldest first."""
        raise NotImplementedError

    @abstractmethod
    def purge_before(self, before: datetime) -> int:
        """Drop idempotency keys and settled webhook deliveries older than `before`."""
        raise NotImplementedError

    # -- segments of split jobs ------------------------------------------------------------------
    @abstractmethod
    def split(self, job: Job, segments: list[Segment], expected_attempt: int) -> bool:
        """Write the split `job` and insert its segments in one transaction, only if the stored
        row is still RUNNING with `expected_attempt` (False: another attempt holds it)."""
        raise NotImplementedError

    @abstractmethod
    def get_segment(self, job_id: str, index: int) -> Segment:
        """Load one segment, or raise JobNotFound."""
        raise NotImplementedError

    @abstractmethod
    def segments(self, job_id: str) -> list[Segment]:
        """The job's segments by index (empty for a job that was not split)."""
        raise NotImplementedError

    @abstractmethod
    def save_segment(self, segment: Segment, expected_status: SegmentStatus, expected_attempt: int) -> bool:
        """Write `segment` only if its stored row still has (expected_status, expected_attempt)."""
        raise NotImplementedError

    @abstractmethod
    def stranded_segments(self, idle_since: datetime, limit: int = 100) -> list[tuple[str, int]]:
        """(job_id, index) of segments of unfinished jobs nothing touched since `idle_since`:
        PENDING ones not updated since then, RUNNING ones whose lease ran out before then."""
        raise NotImplementedError

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """Run a maintenance task one at a time across processes: yields False if another holds it."""
        yield True

    @abstractmethod
    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        raise NotImplementedError

    def database_time(self) -> datetime | None:
        """The database server's clock now, which every process sharing it follows (``clock.DatabaseClock``);
        None where processes on several hosts cannot share the database (embedded)."""
        return None
