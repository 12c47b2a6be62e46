"""Adapter selection by URL scheme, shared by every composition root."""

from __future__ import annotations

from videojobs.common.adapters.sql.capabilities import SqlCapabilityStore
from videojobs.common.adapters.sql.engine import make_engine
from videojobs.common.adapters.sql.migrate import upgrade
from videojobs.common.adapters.sql.rates import SqlRateCounters
from videojobs.common.adapters.sql.repository import SqlJobRepository
from videojobs.common.adapters.sql.tenants import SqlTenantStore, SqlWebhookOutbox
from videojobs.common.config import Settings
from videojobs.common.ports.queue import QueueService


def make_repository(settings: Settings, migrate: bool | None = None) -> SqlJobRepository:
    """SQLite or Postgres by URL; applies migrations first when asked (default: settings.migrate_on_start)."""
    engine = make_engine(settings.effective_database_url, settings.database_schema)
    if settings.migrate_on_start if migrate is None else migrate:
        upgrade(engine)
    return SqlJobRepository(engine)


def make_capability_store(repo: SqlJobRepository) -> SqlCapabilityStore:
    """Worker capabilities live in the job database."""
    return SqlCapabilityStore(repo.engine)


def make_tenant_store(repo: SqlJobRepository) -> SqlTenantStore:
    """Tenants and API keys live in the job database."""
    return SqlTenantStore(repo.engine)


def make_webhook_outbox(repo: SqlJobRepository) -> SqlWebhookOutbox:
    """Completion notices are written with the final state, in the job database."""
    return SqlWebhookOutbox(repo.engine)


def make_rate_counters(repo: SqlJobRepository) -> SqlRateCounters | None:
    """Request-rate counters every api process shares: in a Postgres job database; None on SQLite,
    which one process uses (its in-memory windows are the whole count)."""
    return SqlRateCounters(repo.engine) if repo.engine.dialect.name == "postgresql" else None


def make_queue(settings: Settings) -> QueueService:
    """memory:// -> in-process queue; nats:// -> JetStream work queue."""
    url = settings.queue_url
    if url.startswith("memory:"):
        from videojobs.common.adapters.memory_queue import InMemoryQueue

        return InMemoryQueue(ack_wait_seconds=settings.ack_wait_seconds)
    if url.startswith(("nats:", "tls:")):
        from videojobs.common.adapters.nats_queue import JetStreamQueue

        return JetStreamQueue(
            url,
            stream=settings.nats_stream,
            subject=settings.nats_subject,
            durable=settings.nats_durable,
            ack_wait=settings.ack_wait_seconds,
            max_deliver=settings.nats_max_deliver,
        )
    raise ValueError(f"unsupported VIDEOJOBS_QUEUE_URL {url!r} (expected memory:// or nats://host:port)")
