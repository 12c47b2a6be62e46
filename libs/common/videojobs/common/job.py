"""The Job entity: the one place that knows which state changes are legal.

States and transitions follow the seed's worker state machine:

    submit                      -> PENDING
    worker takes the job        PENDING -> RUNNING
    pipeline succeeds           RUNNING -> COMPLETED
    pipeline fails              RUNNING -> FAILED
    the owner cancels           PENDING or RUNNING -> CANCELLED

COMPLETED, FAILED and CANCELLED are final. A worker crash leaves the row as it was. The
retry policy is expressed here too: a RUNNING job whose lease ran out may be taken again
(the attempt number grows and the lost attempt counts as a crash), a worker that stops on
purpose hands its job back (RUNNING -> PENDING, not counted), and a temporary fault of a
backing service hands it back too, counted as a fault of the current streak, not as an attempt.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from videojobs.common.clock import utcnow
from videojobs.common.errors import IllegalTransition, InvalidJobId
from videojobs.common.options import AnalysisOptions


class JobStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
# The tenant of every job submitted while authentication is off (VIDEOJOBS_AUTH=none).
DEFAULT_TENANT = "default"


def parse_job_id(raw: str) -> str:
    """Canonical form of a job id, or InvalidJobId."""
    text = str(raw)
    if len(text) > 64:  # no UUID spelling is this long; don't parse megabytes
        raise InvalidJobId(text)
    try:
        return str(uuid.UUID(text))
    except (ValueError, AttributeError, TypeError):
        raise InvalidJobId(text) from None


def new_job_id() -> str:
    return str(uuid.uuid4())


def input_key_for(job_id: str, extension: str = "mp4") -> str:
    return f"inputs/{job_id}.{extension}"


def output_key_for(job_id: str) -> str:
    return f"results/{job_id}.json"


@dataclass(frozen=True)
class JobFinished:
    """Domain event: a job reached a final state (the webhook outbox records it with the final write)."""

    job_id: str
    tenant_id: str
    status: JobStatus
    callback_url: str
    created_at: datetime
    finished_at: datetime

    def payload(self) -> dict[str, object]:
        """The notice's JSON (Standard Webhooks shape: type, timestamp, data); URLs relative to the gateway."""
        return {
            "type": f"job.{self.status.value.lower()}",
            "timestamp": self.finished_at.isoformat(),
            "data": {
                "job_id": self.job_id,
                "status": self.status.value,
                "created_at": self.created_at.isoformat(),
                "finished_at": self.finished_at.isoformat(),
                "status_url": f"/video/status/{self.job_id}",
                "results_url": f"/video/results/{self.job_id}" if self.status is JobStatus.COMPLETED else None,
            },
        }


class FaultStreak:
    """Temporary faults of a backing service (storage, database) in a row: counted apart from
    attempts, and bounded in time by the fault window (see ``faulting_for``). Jobs and segments both
    carry ``faults`` and ``faulting_since``."""

    faults: int
    faulting_since: datetime | None

    def _count_fault(self, now: datetime) -> None:
        self.faults += 1
        if self.faulting_since is None:
            self.faulting_since = now

    def faulting_for(self, now: datetime | None = None) -> timedelta:
        """How long the current streak of temporary faults has lasted (zero without one)."""
        if self.faulting_since is None:
            return timedelta(0)
        return (now or utcnow()) - as_utc(self.faulting_since)


@dataclass
class Job(FaultStreak):
    job_id: str
    pipeline_id: str
    options: AnalysisOptions
    input_key: str
    tenant_id: str = DEFAULT_TENANT
    status: JobStatus = JobStatus.PENDING
    output_key: str | None = None
    error_message: str | None = None
    frames_done: int = 0
    frames_total: int = 0
    attempt: int = 0  # claims by workers; the fencing token of every later write
    crashes: int = 0  # attempts whose worker was lost (lease ran out while RUNNING)
    faults: int = 0  # temporary faults (storage, database) in the current streak
    faulting_since: datetime | None = None  # when the current streak of faults began
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    # sha256 of the uploaded bytes (None for a job on an object the client named).
    input_sha256: str | None = None
    # Where the final state is announced (a signed POST); None: no notice.
    callback_url: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Set once retention removed the input object.
    input_deleted_at: datetime | None = None
    # Split into this many segments (0: analysed in one piece). A split job stays RUNNING
    # without a lease while its segments run; the merge then takes a lease of its own.
    segments_total: int = 0
    # Read from the segment rows (not columns of the job): finished segments, and frames an
    # earlier attempt of a segment had analysed that were analysed again.
    segments_done: int = field(default=0, compare=False)
    frames_recomputed: int = field(default=0, compare=False)
    # Events raised by transitions, written by the repository with the same save.
    events: list[JobFinished] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def submit(
        cls,
        pipeline_id: str,
        options: AnalysisOptions | None = None,
        input_key: str | None = None,
        job_id: str | None = None,
        now: datetime | None = None,
        tenant_id: str = DEFAULT_TENANT,
        input_sha256: str | None = None,
        callback_url: str | None = None,
    ) -> "Job":
        """A new PENDING job of `tenant_id`. Its input lives at `input_key` (default: inputs/{id}.mp4)."""
        job_id = parse_job_id(job_id) if job_id else new_job_id()
        now = now or utcnow()
        return cls(
            job_id=job_id,
            pipeline_id=pipeline_id,
            options=options if options is not None else AnalysisOptions(),
            input_key=input_key or input_key_for(job_id),
            tenant_id=tenant_id,
            created_at=now,
            updated_at=now,
            input_sha256=input_sha256,
            callback_url=callback_url or None,
        )

    # -- queries ---------------------------------------------------------------
    @property
    def progress(self) -> float:
        """Fraction of the frames to analyse that are done (1.0 once COMPLETED)."""
        if self.status is JobStatus.COMPLETED:
            return 1.0
        if self.frames_total <= 0:
            return 0.0
        return min(1.0, self.frames_done / self.frames_total)

    @property
    def owns_input(self) -> bool:
        """True if the service stored the input (an upload); an object the client named stays the client's."""
        return self.input_key.startswith(f"inputs/{self.job_id}.")

    def lease_expired(self, now: datetime | None = None) -> bool:
        if self.lease_expires_at is None:
            return True
        return (now or utcnow()) >= as_utc(self.lease_expires_at)

    @property
    def is_split(self) -> bool:
        return self.segments_total > 0

    @property
    def merging(self) -> bool:
        """A worker holds (or held) the merge of this split job's segments."""
        return self.is_split and self.lease_expires_at is not None

    def can_be_taken(self, now: datetime | None = None) -> bool:
        """True if a worker may start (or restart after a lost lease) this job.

        A split job is never taken whole again: its segments carry the work (see ``start_merge``)."""
        if self.is_split:
            return False
        if self.status is JobStatus.PENDING:
            return True
        return self.status is JobStatus.RUNNING and self.lease_expired(now)

    # -- transitions -------------------------------------------------------------
    def start(self, worker_id: str, lease: timedelta, now: datetime | None = None) -> None:
        """PENDING -> RUNNING (or a new attempt of a RUNNING job whose lease ran out)."""
        now = now or utcnow()
        if not self.can_be_taken(now):
            raise IllegalTransition(self.job_id, self.status.value, JobStatus.RUNNING.value)
        if self.status is JobStatus.RUNNING:  # its worker was lost: that attempt ended in a crash
            self.crashes += 1
        self.status = JobStatus.RUNNING
        self.attempt += 1
        self.worker_id = worker_id
        self.lease_expires_at = now + lease
        self.frames_done = 0
        self.started_at = now
        self.updated_at = now

    def split(self, segments_total: int, frames_total: int, now: datetime | None = None) -> None:
        """RUNNING -> RUNNING in `segments_total` segments: this worker gives up the job's lease;
        the segments (each with a lease of its own) carry the work from now on."""
        self._require(JobStatus.RUNNING, JobStatus.RUNNING)
        if segments_total < 1 or self.is_split:
            raise IllegalTransition(self.job_id, "split" if self.is_split else self.status.value, "split")
        self.segments_total = segments_total
        self.frames_total = frames_total
        self.frames_done = 0
        self.worker_id = None
        self.lease_expires_at = None
        self.updated_at = now or utcnow()

    def can_merge(self, now: datetime | None = None) -> bool:
        """A split RUNNING job whose merge nobody holds (or whose merging worker was lost)."""
        if self.status is not JobStatus.RUNNING or not self.is_split:
            return False
        return not self.merging or self.lease_expired(now)

    def start_merge(self, worker_id: str, lease: timedelta, now: datetime | None = None) -> None:
        """Take the merge of a split job (attempt + 1: the fencing token of the final write)."""
        now = now or utcnow()
        if not self.can_merge(now):
            raise IllegalTransition(self.job_id, self.status.value, "merge")
        if self.merging:  # the worker merging before was lost
            self.crashes += 1
        self.attempt += 1
        self.worker_id = worker_id
        self.lease_expires_at = now + lease
        self.updated_at = now

    def extend_lease(self, lease: timedelta, now: datetime | None = None) -> None:
        self._require(JobStatus.RUNNING, JobStatus.RUNNING)
        now = now or utcnow()
        self.lease_expires_at = now + lease
        self.updated_at = now

    def report_progress(self, frames_done: int, frames_total: int, now: datetime | None = None) -> None:
        self._require(JobStatus.RUNNING, JobStatus.RUNNING)
        if frames_total < 0 or frames_done < 0 or (frames_total and frames_done > frames_total):
            raise ValueError(f"bad progress {frames_done}/{frames_total}")
        self.frames_done = frames_done
        self.frames_total = frames_total
        self.updated_at = now or utcnow()

    def complete(self, output_key: str, now: datetime | None = None) -> None:
        """RUNNING -> COMPLETED, with the results stored at `output_key`."""
        self._require(JobStatus.RUNNING, JobStatus.COMPLETED)
        self.status = JobStatus.COMPLETED
        self.output_key = output_key
        self.error_message = None
        if self.frames_total:
            self.frames_done = self.frames_total
        self._finished(now)

    def fail(self, error_message: str, now: datetime | None = None) -> None:
        """RUNNING -> FAILED with a readable reason."""
        self._require(JobStatus.RUNNING, JobStatus.FAILED)
        self._fail(error_message, now)

    def give_up(self, error_message: str, now: datetime | None = None) -> None:
        """PENDING/RUNNING -> FAILED when the retry policy is exhausted (no attempt may run)."""
        if self.status.is_final:
            raise IllegalTransition(self.job_id, self.status.value, JobStatus.FAILED.value)
        self._fail(error_message, now)

    def cancel(self, now: datetime | None = None) -> None:
        """PENDING/RUNNING -> CANCELLED: a PENDING job never runs; a RUNNING one's worker stops at its next batch."""
        if self.status.is_final:
            raise IllegalTransition(self.job_id, self.status.value, JobStatus.CANCELLED.value)
        self.status = JobStatus.CANCELLED
        self._finished(now)

    def release(self, now: datetime | None = None) -> None:
        """RUNNING -> PENDING: a worker that stops on purpose hands the job back."""
        self._require(JobStatus.RUNNING, JobStatus.PENDING)
        self.status = JobStatus.PENDING
        self.worker_id = None
        self.lease_expires_at = None
        self.frames_done = 0
        self.updated_at = now or utcnow()

    def release_merge(self, now: datetime | None = None) -> None:
        """A worker that stops (or meets a temporary fault) while merging gives the merge back."""
        self._require(JobStatus.RUNNING, JobStatus.RUNNING)
        self.worker_id = None
        self.lease_expires_at = None
        self.updated_at = now or utcnow()

    def release_after_fault(self, now: datetime | None = None) -> None:
        """RUNNING -> PENDING because a backing service failed: one more fault in the current streak."""
        now = now or utcnow()
        self.release(now)
        self._count_fault(now)

    # -- helpers ---------------------------------------------------------------------
    def _fail(self, error_message: str, now: datetime | None) -> None:
        self.status = JobStatus.FAILED
        self.error_message = (error_message or "failed").strip()[:2000]
        self._finished(now)

    def _finished(self, now: datetime | None) -> None:
        now = now or utcnow()
        self.lease_expires_at = None
        self.updated_at = now
        self.finished_at = now
        if self.callback_url:
            self.events.append(JobFinished(self.job_id, self.tenant_id, self.status, self.callback_url,
                                           self.created_at, now))

    def _require(self, expected: JobStatus, wanted: JobStatus) -> None:
        if self.status is not expected:
            raise IllegalTransition(self.job_id, self.status.value, wanted.value)


def as_utc(ts: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
