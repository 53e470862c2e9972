"""demo payments: saved cards (customers, cards, card setups) and off-session charges

Revision ID: demo_payments_0002
Revises: demo_payments_0001
Create Date: 2026-11-30 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "demo_payments_0002"
down_revision: str | None = "demo_payments_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("demo_payments_payment") as batch_op:
        batch_op.add_column(sa.Column("failure_code", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("save_card", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("gateway_customer_ref", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("card_ref", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("off_session", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # the defaults were for the rows already there; the gateway always says what it means
    with op.batch_alter_table("demo_payments_payment") as batch_op:
        batch_op.alter_column("save_card", server_default=None)
        batch_op.alter_column("off_session", server_default=None)
    op.create_table(
        "demo_payments_customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_customer_ref", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("customer_ref", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_payments_customer")),
        sa.UniqueConstraint(
            "gateway_customer_ref", name=op.f("uq_demo_payments_customer_gateway_customer_ref")
        ),
        sa.UniqueConstraint(
            "idempotency_key", name=op.f("uq_demo_payments_customer_idempotency_key")
        ),
    )
    op.create_table(
        "demo_payments_card",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("card_ref", sa.String(length=64), nullable=False),
        sa.Column("gateway_customer_ref", sa.String(length=64), nullable=False),
        sa.Column("brand", sa.String(length=20), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("behaviour", sa.String(length=32), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("detached_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_payments_card")),
        sa.UniqueConstraint("card_ref", name=op.f("uq_demo_payments_card_card_ref")),
    )
    op.create_index(
        op.f("ix_demo_payments_card_gateway_customer_ref"),
        "demo_payments_card",
        ["gateway_customer_ref"],
        unique=False,
    )
    op.create_table(
        "demo_payments_setup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_ref", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("customer_ref", sa.String(length=128), nullable=False),
        sa.Column("gateway_customer_ref", sa.String(length=64), nullable=False),
        sa.Column("return_url", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("card_ref", sa.String(length=64), nullable=True),
        sa.Column("pending_behaviour", sa.String(length=32), nullable=True),
        sa.Column("pending_last4", sa.String(length=4), nullable=True),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_payments_setup")),
        sa.UniqueConstraint("gateway_ref", name=op.f("uq_demo_payments_setup_gateway_ref")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_demo_payments_setup_idempotency_key")),
    )


def downgrade() -> None:
    op.drop_table("demo_payments_setup")
    op.drop_index(op.f("ix_demo_payments_card_gateway_customer_ref"), "demo_payments_card")
    op.drop_table("demo_payments_card")
    op.drop_table("demo_payments_customer")
    with op.batch_alter_table("demo_payments_payment") as batch_op:
        batch_op.drop_column("off_session")
        batch_op.drop_column("card_ref")
        batch_op.drop_column("gateway_customer_ref")
        batch_op.drop_column("save_card")
        batch_op.drop_column("failure_code")
