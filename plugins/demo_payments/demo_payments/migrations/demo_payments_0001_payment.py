"""demo payments: the payment table

Revision ID: demo_payments_0001
Revises:
Create Date: 2026-11-22 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "demo_payments_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("demo_payments",)
depends_on: str | Sequence[str] | None = "0001_foundation"


def upgrade() -> None:
    op.create_table(
        "demo_payments_payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_ref", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("invoice_ref", sa.String(length=128), nullable=False),
        sa.Column("customer_ref", sa.String(length=128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("return_url", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_payments_payment")),
        sa.UniqueConstraint("gateway_ref", name=op.f("uq_demo_payments_payment_gateway_ref")),
        sa.UniqueConstraint(
            "idempotency_key", name=op.f("uq_demo_payments_payment_idempotency_key")
        ),
    )


def downgrade() -> None:
    op.drop_table("demo_payments_payment")
