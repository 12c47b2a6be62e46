"""JobRepository on SQLAlchemy Core: SQLite for the embedded default, Postgres in production."""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
import zlib
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from videojobs.common.adapters.sql.tables import idempotency_keys, job_outbox, jobs, segments, webhook_deliveries
from videojobs.common.errors import InvalidOptions, JobNotFound, TemporaryFault, TooManyJobs
from videojobs.common.job import FINAL_STATUSES, Job, JobStatus, as_utc, utcnow
from videojobs.common.options import AnalysisOptions
from videojobs.common.segments import Segment, SegmentStatus
from videojobs.common.ports.jobs import (
    AdmissionLimits,
    Backlog,
    JobRepository,
    ListCursor,
    PriorSubmit,
    PublishIntent,
    RequestIdTaken,
    SubmitRecord,
)

F = TypeVar("F", bound=Callable[..., Any])


def temporary_on_disconnect(fn: F) -> F:
    """Connection-level database errors are temporary faults: callers retry them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with database_unavailable_is_temporary():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def database_unavailable_is_temporary() -> Iterator[None]:
    """Raise ``TemporaryFault`` for an error of the connection rather than of the statement: the server
    is unreachable, gone, or was no longer the primary (``engine.py`` drops such connections)."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) and not exc.connection_invalidated:
            raise
        raise TemporaryFault(f"database unavailable: {exc.orig or exc}") from exc


# Postgres advisory lock ids: any fixed 64-bit numbers, distinct from the migration lock's.
_ADMISSION_LOCK_ID = 0x76696465_6F61646D
_EXCLUSIVE_LOCK_BASE = 0x76696465_6F650000
# SQLite (embedded, one process): in-process locks stand in for advisory locks.
_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()
_FINAL = [s.value for s in FINAL_STATUSES]
_RETRY_AFTER_SECONDS = 30


class SqlJobRepository(JobRepository):
    """Jobs in the `jobs` table; publish intents in `job_outbox` (same transaction)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @temporary_on_disconnect
    def add(self, job: Job, request: SubmitRecord | None = None, limits: AdmissionLimits | None = None,
            request_window_start: datetime | None = None, trace_context: Mapping[str, str] | None = None) -> None:
        try:
            with self._admission_lock(), self._engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADMISSION_LOCK_ID})
                if request is not None:
                    self._claim_request_id(conn, job, request, request_window_start)
                if limits is not None:
                    self._admit(conn, job.tenant_id, limits)
                conn.execute(jobs.insert().values(**_row_from_job(job)))
                conn.execute(job_outbox.insert().values(job_id=job.job_id, created_at=job.created_at,
                                                        trace_context=dict(trace_context) if trace_context else None))
                if request is not None:
                    conn.execute(idempotency_keys.insert().values(
                        tenant_id=job.tenant_id, request_id=request.request_id, job_id=job.job_id,
                        fingerprint=request.fingerprint, created_at=job.created_at))
        except sa_exc.IntegrityError:
            if request is None:
                raise
            # Another submit with the same key committed between our check and our insert.
            prior = self.find_request(job.tenant_id, request.request_id, request_window_start or job.created_at)
            if prior is None:
                raise
            raise RequestIdTaken(prior) from None

    @staticmethod
    def _claim_request_id(conn: sa.Connection, job: Job, request: SubmitRecord,
                          window_start: datetime | None) -> None:
        key = (idempotency_keys.c.tenant_id == job.tenant_id) & (idempotency_keys.c.request_id == request.request_id)
        row = conn.execute(sa.select(idempotency_keys.c.job_id, idempotency_keys.c.fingerprint,
                                     idempotency_keys.c.created_at).where(key)).first()
        if row is None:
            return
        if window_start is not None and as_utc(row.created_at) < window_start:
            conn.execute(idempotency_keys.delete().where(key))  # outside its window: the key is free again
            return
        raise RequestIdTaken(PriorSubmit(row.job_id, row.fingerprint))

    @temporary_on_disconnect
    def admission_counts(self, tenant_id: str) -> tuple[int, int]:
        with self._engine.connect() as conn:
            return _counts(conn, tenant_id)

    @staticmethod
    def _admit(conn: sa.Connection, tenant_id: str, limits: AdmissionLimits) -> None:
        active, pending = _counts(conn, tenant_id)
        if limits.max_active_per_tenant:
            count = active
            if count >= limits.max_active_per_tenant:
                raise TooManyJobs(f"you have {count} unfinished jobs (PENDING + RUNNING), the limit is "
                                  f"{limits.max_active_per_tenant}; retry once some have finished",
                                  _RETRY_AFTER_SECONDS)
        if limits.max_pending:
            count = pending
            if count >= limits.max_pending:
                raise TooManyJobs(f"the service's queue is full ({count} jobs waiting); retry later",
                                  _RETRY_AFTER_SECONDS)

    @contextlib.contextmanager
    def _admission_lock(self) -> Iterator[None]:
        if self._engine.dialect.name == "postgresql":
            yield  # the advisory transaction lock serialises admissions across processes
            return
        with _local_lock(f"{self._engine.url}#admission"):
            yield

    @temporary_on_disconnect
    def get(self, job_id: str) -> Job:
        return self._one(jobs.c.job_id == job_id, job_id)

    @temporary_on_disconnect
    def get_owned(self, tenant_id: str, job_id: str) -> Job:
        return self._one((jobs.c.job_id == job_id) & (jobs.c.tenant_id == tenant_id), job_id)

    def _one(self, where: Any, job_id: str) -> Job:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(where)).mappings().first()
            if row is None:
                raise JobNotFound(job_id)
            return _with_segment_counts(conn, [_job_from_row(row)])[0]

    @temporary_on_disconnect
    def list_owned(self, tenant_id: str, status: JobStatus | None, limit: int,
                   after: ListCursor | None = None) -> list[Job]:
        stmt = sa.select(jobs).where(jobs.c.tenant_id == tenant_id)
        if status is not None:
            stmt = stmt.where(jobs.c.status == status.value)
        if after is not None:
            stmt = stmt.where(sa.or_(jobs.c.created_at < after.created_at,
                                     sa.and_(jobs.c.created_at == after.created_at, jobs.c.job_id < after.job_id)))
        stmt = stmt.order_by(jobs.c.created_at.desc(), jobs.c.job_id.desc()).limit(limit)
        with self._engine.connect() as conn:
            return _with_segment_counts(conn, [_job_from_row(row) for row in conn.execute(stmt).mappings()])

    @temporary_on_disconnect
    def find_request(self, tenant_id: str, request_id: str, since: datetime) -> PriorSubmit | None:
        stmt = sa.select(idempotency_keys.c.job_id, idempotency_keys.c.fingerprint).where(
            idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.request_id == request_id,
            idempotency_keys.c.created_at >= since)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return PriorSubmit(row.job_id, row.fingerprint) if row is not None else None

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
            saved = conn.execute(stmt).rowcount == 1
            if saved and job.events:
                conn.execute(webhook_deliveries.insert(), [{
                    "delivery_id": f"msg_{uuid.uuid4().hex}", "tenant_id": event.tenant_id, "job_id": event.job_id,
                    "url": event.callback_url, "event": event.payload(), "state": "pending", "attempts": 0,
                    "next_attempt_at": event.finished_at, "created_at": event.finished_at,
                } for event in job.events])
        job.events.clear()
        return saved

    @temporary_on_disconnect
    def delete(self, job_id: str, expected_status: JobStatus) -> bool:
        with self._engine.begin() as conn:
            # Children first: SQLite enforces ON DELETE CASCADE only with the pragma on.
            exists = (jobs.c.job_id == job_id) & (jobs.c.status == expected_status.value)
            if conn.execute(sa.select(jobs.c.job_id).where(exists)).first() is None:
                return False
            conn.execute(job_outbox.delete().where(job_outbox.c.job_id == job_id))
            conn.execute(segments.delete().where(segments.c.job_id == job_id))
            conn.execute(idempotency_keys.delete().where(idempotency_keys.c.job_id == job_id))
            return conn.execute(jobs.delete().where(exists)).rowcount == 1

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
                    # A split job whose segments are all DONE but whose merge nobody took (the
                    # worker that finished the last one stopped before it).
                    sa.and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.segments_total > 0,
                            jobs.c.lease_expires_at.is_(None), jobs.c.updated_at < idle_since,
                            ~sa.exists().where(segments.c.job_id == jobs.c.job_id,
                                               segments.c.status != SegmentStatus.DONE.value)),
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

    # -- where a job stands ------------------------------------------------------------------
    @temporary_on_disconnect
    def pending_ahead(self, job: Job) -> int:
        stmt = sa.select(sa.func.count()).select_from(jobs).where(
            jobs.c.status == JobStatus.PENDING.value,
            sa.or_(jobs.c.created_at < job.created_at,
                   sa.and_(jobs.c.created_at == job.created_at, jobs.c.job_id < job.job_id)))
        with self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    @temporary_on_disconnect
    def recent_run_seconds(self, limit: int = 20) -> list[float]:
        stmt = (sa.select(jobs.c.started_at, jobs.c.finished_at)
                .where(jobs.c.status == JobStatus.COMPLETED.value, jobs.c.started_at.is_not(None),
                       jobs.c.finished_at.is_not(None))
                .order_by(jobs.c.finished_at.desc()).limit(limit))
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [max(0.0, (as_utc(r.finished_at) - as_utc(r.started_at)).total_seconds()) for r in rows]

    @temporary_on_disconnect
    def running_count(self) -> int:
        stmt = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == JobStatus.RUNNING.value)
        with self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    # -- retention ---------------------------------------------------------------------------------
    @temporary_on_disconnect
    def expired_inputs(self, finished_before: datetime, limit: int) -> list[Job]:
        stmt = (sa.select(jobs)
                .where(jobs.c.status.in_(_FINAL), jobs.c.finished_at < finished_before,
                       jobs.c.input_deleted_at.is_(None), jobs.c.input_key.like("inputs/%"))
                .order_by(jobs.c.finished_at, jobs.c.job_id).limit(limit))
        with self._engine.connect() as conn:
            return [_job_from_row(row) for row in conn.execute(stmt).mappings()]

    @temporary_on_disconnect
    def mark_input_deleted(self, job_id: str, at: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.job_id == job_id).values(input_deleted_at=at))

    @temporary_on_disconnect
    def expired_jobs(self, finished_before: datetime, limit: int) -> list[Job]:
        stmt = (sa.select(jobs).where(jobs.c.status.in_(_FINAL), jobs.c.finished_at < finished_before)
                .order_by(jobs.c.finished_at, jobs.c.job_id).limit(limit))
        with self._engine.connect() as conn:
            return [_job_from_row(row) for row in conn.execute(stmt).mappings()]

    @temporary_on_disconnect
    def purge_before(self, before: datetime) -> int:
        with self._engine.begin() as conn:
            keys = conn.execute(idempotency_keys.delete().where(idempotency_keys.c.created_at < before)).rowcount
            notices = conn.execute(webhook_deliveries.delete().where(
                webhook_deliveries.c.state != "pending", webhook_deliveries.c.finished_at < before)).rowcount
        return keys + notices

    # -- segments ----------------------------------------------------------------------------------
    @temporary_on_disconnect
    def split(self, job: Job, parts: list[Segment], expected_attempt: int) -> bool:
        values = _row_from_job(job)
        del values["job_id"], values["created_at"]
        stmt = (jobs.update().where(jobs.c.job_id == job.job_id, jobs.c.status == JobStatus.RUNNING.value,
                                    jobs.c.attempt == expected_attempt).values(**values))
        with self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return False
            # An earlier split of this attempt cannot exist (split happens once per job), but a
            # leftover of a deleted job's id would: start clean.
            conn.execute(segments.delete().where(segments.c.job_id == job.job_id))
            conn.execute(segments.insert(), [_row_from_segment(seg) for seg in parts])
        return True

    @temporary_on_disconnect
    def get_segment(self, job_id: str, index: int) -> Segment:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(segments).where(segments.c.job_id == job_id,
                                                         segments.c.segment_index == index)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return _segment_from_row(row)

    @temporary_on_disconnect
    def segments(self, job_id: str) -> list[Segment]:
        stmt = sa.select(segments).where(segments.c.job_id == job_id).order_by(segments.c.segment_index)
        with self._engine.connect() as conn:
            return [_segment_from_row(row) for row in conn.execute(stmt).mappings()]

    @temporary_on_disconnect
    def save_segment(self, segment: Segment, expected_status: SegmentStatus, expected_attempt: int) -> bool:
        values = _row_from_segment(segment)
        del values["job_id"], values["segment_index"]
        stmt = (segments.update()
                .where(segments.c.job_id == segment.job_id, segments.c.segment_index == segment.index,
                       segments.c.status == expected_status.value, segments.c.attempt == expected_attempt)
                .values(**values))
        with self._engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    @temporary_on_disconnect
    def stranded_segments(self, idle_since: datetime, limit: int = 100) -> list[tuple[str, int]]:
        stmt = (
            sa.select(segments.c.job_id, segments.c.segment_index)
            .join(jobs, jobs.c.job_id == segments.c.job_id)
            .where(jobs.c.status == JobStatus.RUNNING.value)
            .where(sa.or_(
                sa.and_(segments.c.status == SegmentStatus.PENDING.value, segments.c.updated_at < idle_since),
                sa.and_(segments.c.status == SegmentStatus.RUNNING.value, segments.c.lease_expires_at < idle_since),
            ))
            .order_by(segments.c.updated_at, segments.c.job_id, segments.c.segment_index)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [(row.job_id, row.segment_index) for row in conn.execute(stmt)]

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        if self._engine.dialect.name != "postgresql":
            lock = _local_lock(f"{self._engine.url}#{name}")
            acquired = lock.acquire(blocking=False)
            try:
                yield acquired
            finally:
                if acquired:
                    lock.release()
            return
        lock_id = _EXCLUSIVE_LOCK_BASE + (zlib.crc32(name.encode()) & 0xFFFF)
        with database_unavailable_is_temporary():
            conn = self._engine.connect()
        with conn:
            acquired = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}).scalar())
            conn.commit()
            try:
                yield acquired
            finally:
                if acquired:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                    conn.commit()

    @temporary_on_disconnect
    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(sa.select(sa.func.count()).select_from(jobs))

    @temporary_on_disconnect
    def database_time(self) -> datetime | None:
        if self._engine.dialect.name != "postgresql":  # SQLite: this host's own file
            return None
        with self._engine.connect() as conn:
            return conn.execute(sa.select(sa.func.clock_timestamp())).scalar_one()

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
        "tenant_id": job.tenant_id,
        "input_sha256": job.input_sha256,
        "callback_url": job.callback_url,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "input_deleted_at": job.input_deleted_at,
        "segments_total": job.segments_total,
    }


def _row_from_segment(seg: Segment) -> dict[str, Any]:
    return {
        "job_id": seg.job_id,
        "segment_index": seg.index,
        "first_sample": seg.first_sample,
        "end_sample": seg.end_sample,
        "first_frame": seg.first_frame,
        "last_frame": seg.last_frame,
        "status": seg.status.value,
        "attempt": seg.attempt,
        "crashes": seg.crashes,
        "worker_id": seg.worker_id,
        "lease_expires_at": seg.lease_expires_at,
        "frames_done": seg.frames_done,
        "frames_recomputed": seg.frames_recomputed,
        "faults": seg.faults,
        "faulting_since": seg.faulting_since,
        "updated_at": seg.updated_at,
    }


def _segment_from_row(row: Any) -> Segment:
    return Segment(
        job_id=row["job_id"],
        index=row["segment_index"],
        first_sample=row["first_sample"],
        end_sample=row["end_sample"],
        first_frame=row["first_frame"],
        last_frame=row["last_frame"],
        status=SegmentStatus(row["status"]),
        attempt=row["attempt"],
        crashes=row["crashes"],
        worker_id=row["worker_id"],
        lease_expires_at=_opt_utc(row["lease_expires_at"]),
        frames_done=row["frames_done"],
        frames_recomputed=row["frames_recomputed"],
        faults=row["faults"],
        faulting_since=_opt_utc(row["faulting_since"]),
        updated_at=_opt_utc(row["updated_at"]),
    )


def _with_segment_counts(conn: sa.Connection, found: list[Job]) -> list[Job]:
    """Split jobs get their progress, finished segments and recomputed frames from their segments."""
    split = {job.job_id: job for job in found if job.segments_total}
    if not split:
        return found
    stmt = (sa.select(segments.c.job_id, sa.func.sum(segments.c.frames_done), sa.func.sum(segments.c.frames_recomputed),
                      sa.func.count().filter(segments.c.status == SegmentStatus.DONE.value))
            .where(segments.c.job_id.in_(list(split))).group_by(segments.c.job_id))
    for job_id, done, recomputed, finished in conn.execute(stmt):
        job = split[job_id]
        job.frames_recomputed = int(recomputed or 0)
        job.segments_done = int(finished or 0)
        if not job.status.is_final:
            job.frames_done = min(int(done or 0), job.frames_total) if job.frames_total else int(done or 0)
    return found


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
        tenant_id=row["tenant_id"],
        input_sha256=row["input_sha256"],
        callback_url=row["callback_url"],
        started_at=_opt_utc(row["started_at"]),
        finished_at=_opt_utc(row["finished_at"]),
        input_deleted_at=_opt_utc(row["input_deleted_at"]),
        segments_total=row["segments_total"],
    )


def _counts(conn: sa.Connection, tenant_id: str) -> tuple[int, int]:
    active = [JobStatus.PENDING.value, JobStatus.RUNNING.value]
    mine = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
        jobs.c.tenant_id == tenant_id, jobs.c.status.in_(active))).scalar_one()
    pending = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
        jobs.c.status == JobStatus.PENDING.value)).scalar_one()
    return int(mine), int(pending)


def _local_lock(name: str) -> threading.Lock:
    with _LOCAL_LOCKS_GUARD:
        return _LOCAL_LOCKS.setdefault(name, threading.Lock())
