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
    op.execute(
        "UPDATE billing_contract SET is_default = "
        + ("1" if op.get_bind().dialect.name == "sqlite" else "true")
        + " WHERE active AND id IN (SELECT min(id) FROM billing_contract WHERE active "
        "GROUP BY customer_id, currency)"
    )
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
