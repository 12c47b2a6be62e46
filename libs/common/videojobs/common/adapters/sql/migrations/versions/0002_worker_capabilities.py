"""worker_capabilities: what each worker can do (model, class names, OCR languages)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_capabilities",
        sa.Column("worker_id", sa.String(128), primary_key=True),
        sa.Column("model_file", sa.String(512), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("class_names", sa.JSON, nullable=False),
        sa.Column("ocr_languages", sa.JSON, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_worker_capabilities_published_at", "worker_capabilities", ["published_at"])


def downgrade() -> None:
    op.drop_index("ix_worker_capabilities_published_at", table_name="worker_capabilities")
    op.drop_table("worker_capabilities")
