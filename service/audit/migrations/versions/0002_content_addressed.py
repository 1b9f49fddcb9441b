"""Content-addressed input resources and decision contents; the chained row keeps a reference.

Revision ID: 0002_content_addressed
Revises: 0001_initial
Create Date: 2026-11-29 00:00:00

Only adds: old records keep their inline ``content`` (``content_sha256`` stays NULL), so
their hashes, and the chain through them, are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_content_addressed"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _blob_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("codec", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )


def upgrade() -> None:
    _blob_table("audit_resource")
    _blob_table("audit_content")
    op.add_column("audit_record", sa.Column("content_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_record", "content_sha256")
    op.drop_table("audit_content")
    op.drop_table("audit_resource")
