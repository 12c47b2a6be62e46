"""tenants' own limits: active jobs and request rate in place of the service's defaults

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the service's default (VIDEOJOBS_MAX_ACTIVE_JOBS_PER_TENANT, VIDEOJOBS_TENANT_REQUEST_RATE).
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("max_active_jobs", sa.Integer, nullable=True))
        batch.add_column(sa.Column("request_rate", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("request_rate")
        batch.drop_column("max_active_jobs")
