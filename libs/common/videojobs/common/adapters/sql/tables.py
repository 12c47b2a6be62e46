"""Table definitions shared by the repository and the Alembic migrations."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("pipeline_id", sa.String(32), nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("input_key", sa.String(512), nullable=False),
    sa.Column("output_key", sa.String(512), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("frames_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("frames_total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("crashes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("faults", sa.Integer, nullable=False, server_default="0"),
    sa.Column("faulting_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # 0003: ownership, input hash, completion notice, lifecycle times
    sa.Column("tenant_id", sa.String(64), nullable=False, server_default="default"),
    sa.Column("input_sha256", sa.String(64), nullable=True),
    sa.Column("callback_url", sa.String(2048), nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("input_deleted_at", sa.DateTime(timezone=True), nullable=True),
    # 0006: a long job split into segments (0: one piece)
    sa.Column("segments_total", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at", "job_id"),
    sa.Index("ix_jobs_status_created", "status", "created_at", "job_id"),
    sa.Index("ix_jobs_finished_at", "finished_at"),
)

# Segments of split jobs (0006): ranges of sampled frames, each taken by a worker like a job
# (claim = compare-and-set on status and attempt, lease, fencing). Output objects are
# segments/{job_id}/{segment_index}.json.
segments = sa.Table(
    "segments",
    metadata,
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("segment_index", sa.Integer, primary_key=True),
    sa.Column("first_sample", sa.Integer, nullable=False),
    sa.Column("end_sample", sa.Integer, nullable=False),
    sa.Column("first_frame", sa.Integer, nullable=False),
    sa.Column("last_frame", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("crashes", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker_id", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("frames_done", sa.Integer, nullable=False, server_default="0"),
    sa.Column("frames_recomputed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # 0007: a segment's streak of temporary faults, bounded by the fault window like a job's
    sa.Column("faults", sa.Integer, nullable=False, server_default="0"),
    sa.Column("faulting_since", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_segments_status_updated", "status", "updated_at"),
)

# Transactional outbox: the intent to publish a job id, written in the same
# transaction as the job row; a relay publishes it and stamps published_at.
job_outbox = sa.Table(
    "job_outbox",
    metadata,
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True, index=True),
    # W3C trace context of the submit ({"traceparent": ..., "tracestate": ...}), sent as message headers.
    sa.Column("trace_context", sa.JSON, nullable=True),
)

# What each worker published about itself; the api validates class names and OCR
# languages at submit against the newest row.
worker_capabilities = sa.Table(
    "worker_capabilities",
    metadata,
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("model_file", sa.String(512), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("class_names", sa.JSON, nullable=False),
    sa.Column("ocr_languages", sa.JSON, nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Tenants and their API keys (0003). A key is stored as its public prefix and a keyed
# hash, never in clear; the webhook secret signs the tenant's completion notices.
tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("webhook_secret", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # The tenant's own limits; NULL: the service's default.
    sa.Column("max_active_jobs", sa.Integer, nullable=True),
    sa.Column("request_rate", sa.String(64), nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("prefix", sa.String(16), primary_key=True),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.tenant_id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

# Idempotent submits (0003): one row per (tenant, key), written with the job it created.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.job_id", ondelete="CASCADE"), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# Webhook outbox (0003): one row per final state of a job with a callback_url, written in
# the transaction of that final write; the api's dispatcher delivers and records attempts.
# No foreign key to jobs: a notice outlives the job it tells about (e.g. a delete).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False, index=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("event", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

# Request-rate counters shared by every api process (0008): `limits`' sliding window counter keeps
# one row per tenant and window (``{limit key}/{window number}``), gone once it has expired.
rate_counters = sa.Table(
    "rate_counters",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
