"""payments: webhook events received from payment gateways (once each), disputes

Revision ID: 0007_payments
Revises: 0006_billing
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "0007_payments"
down_revision: str | None = "0006_billing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_webhook_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_key", sa.String(length=63), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("occurred_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("received_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("payment_ref", sa.String(length=255), nullable=True),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column(
            "result",
            sa.Enum(
                "recorded",
                "no_effect",
                "unmatched",
                name="webhook_result",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_payment_webhook_event_invoice_id_invoice"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_webhook_event")),
        sa.UniqueConstraint(
            "gateway_key", "event_id", name=op.f("uq_payment_webhook_event_gateway_key_event_id")
        ),
    )
    with op.batch_alter_table("payment_webhook_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_webhook_event_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            "ix_payment_webhook_event_result_received_at",
            ["result", "received_at"],
            unique=False,
        )

    op.create_table(
        "payment_dispute",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("gateway_key", sa.String(length=63), nullable=False),
        sa.Column("dispute_ref", sa.String(length=255), nullable=False),
        sa.Column("payment_ref", sa.String(length=255), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("opened_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("recorded_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_payment_dispute_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_payment_dispute_invoice_id_invoice"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_payment_dispute_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_dispute")),
        sa.UniqueConstraint(
            "gateway_key", "dispute_ref", name=op.f("uq_payment_dispute_gateway_key_dispute_ref")
        ),
    )
    with op.batch_alter_table("payment_dispute", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_dispute_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_dispute_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_dispute_partner_id"), ["partner_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_dispute", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_dispute_partner_id"))
        batch_op.drop_index(batch_op.f("ix_payment_dispute_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_payment_dispute_customer_id"))

    op.drop_table("payment_dispute")
    with op.batch_alter_table("payment_webhook_event", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_webhook_event_result_received_at")
        batch_op.drop_index(batch_op.f("ix_payment_webhook_event_invoice_id"))

    op.drop_table("payment_webhook_event")
