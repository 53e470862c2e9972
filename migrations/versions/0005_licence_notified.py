"""licence change: when the people concerned were told

Revision ID: 0005_licence_notified
Revises: 0004_licences
Create Date: 2026-11-30 08:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "0005_licence_notified"
down_revision: str | None = "0004_licences"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("licence_change", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notified_at", portal.core.db.UTCDateTime(), nullable=True))
    # changes finished before this column existed were told about as they finished
    op.execute("UPDATE licence_change SET notified_at = finished_at WHERE finished_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("licence_change", schema=None) as batch_op:
        batch_op.drop_column("notified_at")
