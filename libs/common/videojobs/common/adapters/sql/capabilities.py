"""CapabilityStore on the job database (SQLite embedded, Postgres in production)."""

from __future__ import annotations

import sqlalchemy as sa

from videojobs.common.adapters.sql.repository import temporary_on_disconnect
from videojobs.common.adapters.sql.tables import worker_capabilities
from videojobs.common.job import as_utc
from videojobs.common.ports.capabilities import CapabilityStore
from videojobs.common.resources import WorkerCapabilities


class SqlCapabilityStore(CapabilityStore):
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @temporary_on_disconnect
    def publish(self, capabilities: WorkerCapabilities) -> None:
        row = capabilities.model_dump()
        with self._engine.begin() as conn:
            conn.execute(worker_capabilities.delete().where(worker_capabilities.c.worker_id == capabilities.worker_id))
            conn.execute(worker_capabilities.insert().values(**row))

    @temporary_on_disconnect
    def latest(self) -> WorkerCapabilities | None:
        stmt = sa.select(worker_capabilities).order_by(worker_capabilities.c.published_at.desc()).limit(1)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        if row is None:
            return None
        return WorkerCapabilities(**{**row, "published_at": as_utc(row["published_at"])})
