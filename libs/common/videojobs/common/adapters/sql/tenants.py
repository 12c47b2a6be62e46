"""TenantStore and WebhookOutbox on the job database."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from videojobs.common.adapters.sql.repository import temporary_on_disconnect
from videojobs.common.adapters.sql.tables import api_keys, tenants, webhook_deliveries
from videojobs.common.job import as_utc, utcnow
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.ports.webhooks import Delivery, WebhookOutbox
from videojobs.common.tenants import ApiKeyRecord, Tenant, TenantLimits, new_webhook_secret

log = logging.getLogger(__name__)


class SqlTenantStore(TenantStore):
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @temporary_on_disconnect
    def ensure_tenant(self, tenant_id: str) -> Tenant:
        existing = self.get_tenant(tenant_id)
        if existing is not None:
            return existing
        try:
            with self._engine.begin() as conn:
                conn.execute(tenants.insert().values(tenant_id=tenant_id, webhook_secret=new_webhook_secret(),
                                                     created_at=utcnow()))
        except sa_exc.IntegrityError:
            pass  # created meanwhile by another process
        tenant = self.get_tenant(tenant_id)
        assert tenant is not None
        return tenant

    @temporary_on_disconnect
    def get_tenant(self, tenant_id: str) -> Tenant | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.tenant_id == tenant_id)).mappings().first()
        return _tenant(row) if row is not None else None

    @temporary_on_disconnect
    def list_tenants(self) -> list[Tenant]:
        with self._engine.connect() as conn:
            return [_tenant(row) for row in conn.execute(sa.select(tenants).order_by(tenants.c.tenant_id)).mappings()]

    @temporary_on_disconnect
    def set_limits(self, tenant_id: str, limits: TenantLimits) -> Tenant | None:
        with self._engine.begin() as conn:
            changed = conn.execute(tenants.update().where(tenants.c.tenant_id == tenant_id).values(
                max_active_jobs=limits.max_active_jobs, request_rate=limits.request_rate)).rowcount
        return self.get_tenant(tenant_id) if changed == 1 else None

    @temporary_on_disconnect
    def add_key(self, record: ApiKeyRecord) -> None:
        with self._engine.begin() as conn:
            conn.execute(api_keys.insert().values(prefix=record.prefix, tenant_id=record.tenant_id,
                                                  label=record.label, key_hash=record.key_hash,
                                                  created_at=record.created_at, revoked_at=record.revoked_at))

    @temporary_on_disconnect
    def find_key(self, prefix: str) -> ApiKeyRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).mappings().first()
        return _key(row) if row is not None else None

    @temporary_on_disconnect
    def list_keys(self) -> list[ApiKeyRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.tenant_id, api_keys.c.created_at)).mappings()
            return [_key(row) for row in rows]

    @temporary_on_disconnect
    def revoke_key(self, prefix: str) -> bool:
        with self._engine.begin() as conn:
            return conn.execute(api_keys.update().where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
                                .values(revoked_at=utcnow())).rowcount == 1


def _tenant(row: Any) -> Tenant:
    try:
        limits = TenantLimits(row["max_active_jobs"], row["request_rate"])
    except ValueError as exc:  # written around `videojobs tenants set`: the tenant keeps the service's limits
        log.error("tenant %s: its own limits in the database are not valid (%s); the service's apply", row["tenant_id"],
                  exc)
        limits = TenantLimits()
    return Tenant(row["tenant_id"], row["webhook_secret"], as_utc(row["created_at"]), limits)


def _key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(prefix=row["prefix"], tenant_id=row["tenant_id"], label=row["label"],
                        key_hash=row["key_hash"], created_at=as_utc(row["created_at"]),
                        revoked_at=as_utc(row["revoked_at"]) if row["revoked_at"] is not None else None)


class SqlWebhookOutbox(WebhookOutbox):
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    @temporary_on_disconnect
    def claim_due(self, now: datetime, limit: int, hold_until: datetime) -> list[Delivery]:
        t = webhook_deliveries
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.state == "pending", t.c.next_attempt_at <= now)
                                .order_by(t.c.next_attempt_at).limit(limit)).mappings().all()
        claimed = []
        for row in rows:
            with self._engine.begin() as conn:
                won = conn.execute(t.update().where(t.c.delivery_id == row["delivery_id"], t.c.state == "pending",
                                                    t.c.attempts == row["attempts"])
                                   .values(attempts=row["attempts"] + 1, next_attempt_at=hold_until)).rowcount == 1
            if won:
                claimed.append(Delivery(delivery_id=row["delivery_id"], tenant_id=row["tenant_id"],
                                        job_id=row["job_id"], url=row["url"], event=row["event"],
                                        attempts=row["attempts"] + 1, created_at=as_utc(row["created_at"])))
        return claimed

    @temporary_on_disconnect
    def delivered(self, delivery_id: str, at: datetime) -> None:
        self._settle(delivery_id, state="delivered", finished_at=at, last_error=None)

    @temporary_on_disconnect
    def retry_at(self, delivery_id: str, when: datetime, error: str) -> None:
        self._settle(delivery_id, next_attempt_at=when, last_error=error[:2000])

    @temporary_on_disconnect
    def give_up(self, delivery_id: str, at: datetime, error: str) -> None:
        self._settle(delivery_id, state="failed", finished_at=at, last_error=error[:2000])

    def _settle(self, delivery_id: str, **values: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(webhook_deliveries.update().where(webhook_deliveries.c.delivery_id == delivery_id)
                         .values(**values))

    @temporary_on_disconnect
    def deliveries_of(self, job_id: str) -> list[dict[str, Any]]:
        t = webhook_deliveries
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.job_id == job_id).order_by(t.c.created_at)).mappings()
            return [dict(row) for row in rows]
