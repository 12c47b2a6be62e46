"""JobRepository on SQLAlchemy Core: SQLite for the embedded default, Postgres in production."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Callable, Mapping, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from videojobs.common.adapters.sql.tables import job_outbox, jobs
from videojobs.common.errors import InvalidOptions, JobNotFound, TemporaryFault
from videojobs.common.job import Job, JobStatus, as_utc, utcnow
from videojobs.common.options import AnalysisOptions
from videojobs.common.ports.jobs import Backlog, JobRepository, PublishIntent

F = TypeVar("F", bound=Callable[..., Any])


def temporary_on_disconnect(fn: F) -> F:
    """Connection-level database errors are temporary faults: callers retry them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise TemporaryFault(f"database unavailable: {exc.orig or exc}") from exc

    return wrapper  # type: ignore[return-value]


class SqlJobRepository(JobRepository):
    """Jobs in the `jobs` table; publish intents in `job_outbox` (same transaction)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @temporary_on_disconnect
    def add(self, job: Job, trace_context: Mapping[str, str] | None = None) -> None:
        with self._engine.begin() as conn:
            conn.execute(jobs.insert().values(**_row_from_job(job)))
            conn.execute(job_outbox.insert().values(job_id=job.job_id, created_at=job.created_at,
                                                    trace_context=dict(trace_context) if trace_context else None))

    @temporary_on_disconnect
    def get(self, job_id: str) -> Job:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return _job_from_row(row)

    @temporary_on_disconnect
    def save(self, job: Job, expected_status: JobStatus, expected_attempt: int) -> bool:
        values = _row_from_job(job)
        del values["job_id"], values["created_at"]
        stmt = (
            jobs.update()
            .where(jobs.c.job_id == job.job_id)
            .where(jobs.c.status == expected_status.value)
            .where(jobs.c.attempt == expected_attempt)
            .values(**values)
        )
        with self._engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    @temporary_on_disconnect
    def unfinished_job_ids(self) -> list[str]:
        stmt = (
            sa.select(jobs.c.job_id)
            .where(jobs.c.status.in_([JobStatus.PENDING.value, JobStatus.RUNNING.value]))
            .order_by(jobs.c.created_at, jobs.c.job_id)
        )
        with self._engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    @temporary_on_disconnect
    def stranded_job_ids(self, idle_since: datetime, limit: int = 100) -> list[str]:
        stmt = (
            sa.select(jobs.c.job_id)
            .where(
                sa.or_(
                    sa.and_(jobs.c.status == JobStatus.PENDING.value, jobs.c.updated_at < idle_since),
                    sa.and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_expires_at < idle_since),
                )
            )
            .order_by(jobs.c.created_at, jobs.c.job_id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def unpublished_job_ids(self, limit: int = 100) -> list[str]:
        return [intent.job_id for intent in self.unpublished(limit)]

    @temporary_on_disconnect
    def unpublished(self, limit: int = 100) -> list[PublishIntent]:
        stmt = (
            sa.select(job_outbox.c.job_id, job_outbox.c.trace_context)
            .where(job_outbox.c.published_at.is_(None))
            .order_by(job_outbox.c.created_at, job_outbox.c.job_id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [PublishIntent(row.job_id, dict(row.trace_context or {})) for row in conn.execute(stmt)]

    @temporary_on_disconnect
    def backlog(self, now: datetime) -> Backlog:
        unfinished = [JobStatus.PENDING.value, JobStatus.RUNNING.value]
        by_status = (
            sa.select(
                jobs.c.status,
                sa.func.count(),
                sa.func.min(jobs.c.created_at),
                sa.func.count().filter(jobs.c.lease_expires_at < now),
            )
            .where(jobs.c.status.in_(unfinished))
            .group_by(jobs.c.status)
        )
        outbox = sa.select(sa.func.count(), sa.func.min(job_outbox.c.created_at)).where(
            job_outbox.c.published_at.is_(None))
        with self._engine.connect() as conn:
            rows = {row[0]: row for row in conn.execute(by_status)}
            unpublished, oldest_unpublished = conn.execute(outbox).one()
        pending = rows.get(JobStatus.PENDING.value)
        running = rows.get(JobStatus.RUNNING.value)
        return Backlog(
            pending=pending[1] if pending else 0,
            running=running[1] if running else 0,
            lease_expired=running[3] if running else 0,
            oldest_pending_at=_opt_utc(pending[2]) if pending else None,
            outbox_unpublished=unpublished or 0,
            oldest_unpublished_at=_opt_utc(oldest_unpublished),
        )

    @temporary_on_disconnect
    def mark_published(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        with self._engine.begin() as conn:
            conn.execute(
                job_outbox.update().where(job_outbox.c.job_id.in_(job_ids)).values(published_at=utcnow())
            )

    @temporary_on_disconnect
    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(sa.select(sa.func.count()).select_from(jobs))

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def dispose(self) -> None:
        self._engine.dispose()


def _row_from_job(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "pipeline_id": job.pipeline_id,
        "options": job.options.to_dict(),
        "input_key": job.input_key,
        "output_key": job.output_key,
        "error_message": job.error_message,
        "frames_done": job.frames_done,
        "frames_total": job.frames_total,
        "attempt": job.attempt,
        "crashes": job.crashes,
        "faults": job.faults,
        "faulting_since": job.faulting_since,
        "worker_id": job.worker_id,
        "lease_expires_at": job.lease_expires_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def _options(raw: dict[str, Any] | None) -> AnalysisOptions:
    try:
        return AnalysisOptions.parse(raw)
    except InvalidOptions:
        # Stored before a validation rule tightened: keep what was asked; the worker fails it.
        return AnalysisOptions.model_construct(**(raw or {}))


def _opt_utc(ts: datetime | None) -> datetime | None:
    return as_utc(ts) if ts is not None else None


def _job_from_row(row: Any) -> Job:
    return Job(
        job_id=row["job_id"],
        status=JobStatus(row["status"]),
        pipeline_id=row["pipeline_id"],
        options=_options(row["options"]),
        input_key=row["input_key"],
        output_key=row["output_key"],
        error_message=row["error_message"],
        frames_done=row["frames_done"],
        frames_total=row["frames_total"],
        attempt=row["attempt"],
        crashes=row["crashes"],
        faults=row["faults"],
        faulting_since=_opt_utc(row["faulting_since"]),
        worker_id=row["worker_id"],
        lease_expires_at=_opt_utc(row["lease_expires_at"]),
        created_at=_opt_utc(row["created_at"]),
        updated_at=_opt_utc(row["updated_at"]),
    )
