"""automatic credit hold: a grace period and a credit limit per partner (its billing settings),
a grace period per customer, and whether a customer's hold was put automatically (issue 14,
point 7)

Revision ID: 0014_credit_hold
Revises: 0013_partner_settings
Create Date: 2026-12-07 21:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_credit_hold"
down_revision: str | None = "0013_partner_settings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("billing_settings", sa.Column("hold_grace_days", sa.Integer(), nullable=True))
    op.add_column("billing_settings", sa.Column("hold_limit_minor", sa.BigInteger(), nullable=True))
    op.add_column("customer", sa.Column("hold_grace_days", sa.Integer(), nullable=True))
    op.add_column(
        "customer",
        sa.Column("credit_hold_automatic", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): batch mode would rebuild the tables and,
    # with foreign keys on, cascade-delete what refers to them
    op.drop_column("customer", "credit_hold_automatic")
    op.drop_column("customer", "hold_grace_days")
    op.drop_column("billing_settings", "hold_limit_minor")
    op.drop_column("billing_settings", "hold_grace_days")
