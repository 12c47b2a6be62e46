"""segments: long jobs split into ranges of sampled frames; jobs.segments_total

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("segments_total", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "segments",
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
    )
    op.create_index("ix_segments_status_updated", "segments", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_segments_status_updated", table_name="segments")
    op.drop_table("segments")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("segments_total")
