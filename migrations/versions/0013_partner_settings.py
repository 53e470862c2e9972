"""partner settings: the partner's default currency and the invoice details (legal name,
address, tax id, footer) its invoices print (issue 14)

Revision ID: 0013_partner_settings
Revises: 0012_onboarding
Create Date: 2026-12-07 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_partner_settings"
down_revision: str | None = "0012_onboarding"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "partner",
        sa.Column("default_currency", sa.String(length=3), nullable=False, server_default="USD"),
    )
    op.add_column("partner", sa.Column("invoice_legal_name", sa.String(length=200), nullable=True))
    op.add_column("partner", sa.Column("invoice_address", sa.Text(), nullable=True))
    op.add_column("partner", sa.Column("invoice_tax_id", sa.String(length=64), nullable=True))
    op.add_column("partner", sa.Column("invoice_footer", sa.Text(), nullable=True))


def downgrade() -> None:
    # plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): batch mode would rebuild the partner
    # table and, with foreign keys on, cascade-delete everything that refers to it
    op.drop_column("partner", "invoice_footer")
    op.drop_column("partner", "invoice_tax_id")
    op.drop_column("partner", "invoice_address")
    op.drop_column("partner", "invoice_legal_name")
    op.drop_column("partner", "default_currency")
