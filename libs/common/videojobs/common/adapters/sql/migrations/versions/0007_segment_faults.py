"""segments.faults, segments.faulting_since: a segment's temporary faults end in FAILED after the window

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.add_column(sa.Column("faults", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("faulting_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.drop_column("faulting_since")
        batch.drop_column("faults")
