"""job_outbox: the submit's trace context, sent with the queue message

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_outbox") as batch:
        batch.add_column(sa.Column("trace_context", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_outbox") as batch:
        batch.drop_column("trace_context")
