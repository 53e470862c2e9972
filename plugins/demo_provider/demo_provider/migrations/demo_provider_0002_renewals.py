"""demo provider: terms, auto-renew and the next term's quantity (issue 14, point 4)

Revision ID: demo_provider_0002
Revises: demo_provider_0001
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "demo_provider_0002"
down_revision: str | None = "demo_provider_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "demo_provider_subscription"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("term", sa.String(length=8), nullable=True))
    op.add_column(TABLE, sa.Column("term_ends_on", sa.Date(), nullable=True))
    op.add_column(
        TABLE,
        sa.Column("auto_renew", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column(TABLE, sa.Column("renewal_quantity", sa.Integer(), nullable=True))


def downgrade() -> None:
    # plain ALTER TABLE … DROP COLUMN (SQLite 3.35+), no batch rebuild
    op.drop_column(TABLE, "renewal_quantity")
    op.drop_column(TABLE, "auto_renew")
    op.drop_column(TABLE, "term_ends_on")
    op.drop_column(TABLE, "term")
