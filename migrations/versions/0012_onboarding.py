"""onboarding: a customer's primary domain; a default billing contract per customer and currency
(the one a purchase lands on), the first active contract of each becoming it (issue 14)

Revision ID: 0012_onboarding
Revises: 0011_purchase_billing
Create Date: 2026-12-07 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_onboarding"
down_revision: str | None = "0011_purchase_billing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULTS = sa.text("is_default")


def upgrade() -> None:
    op.add_column("customer", sa.Column("domain", sa.String(length=253), nullable=True))
    op.add_column(
        "billing_contract",
        sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # the oldest active contract of each customer and currency becomes its default
    contract = sa.table(
        "billing_contract",
        sa.column("id", sa.Integer()),
        sa.column("customer_id", sa.Integer()),
        sa.column("currency", sa.String()),
        sa.column("active", sa.Boolean()),
        sa.column("is_default", sa.Boolean()),
    )
    oldest = (
        sa.select(sa.func.min(contract.c.id))
        .where(contract.c.active.is_(True))
        .group_by(contract.c.customer_id, contract.c.currency)
    )
    op.execute(contract.update().where(contract.c.id.in_(oldest)).values(is_default=True))
    op.create_index(
        "uq_billing_contract_default",
        "billing_contract",
        ["customer_id", "currency"],
        unique=True,
        postgresql_where=DEFAULTS,
        sqlite_where=DEFAULTS,
    )


def downgrade() -> None:
    op.drop_index("uq_billing_contract_default", table_name="billing_contract")
    # plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): batch mode would rebuild the tables and,
    # with foreign keys on, cascade-delete what refers to them
    op.drop_column("billing_contract", "is_default")
    op.drop_column("customer", "domain")
