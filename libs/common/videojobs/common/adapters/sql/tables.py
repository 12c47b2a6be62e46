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
