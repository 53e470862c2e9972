"""outbox and adapter choice

Revision ID: 0002_outbox
Revises: 0001_foundation
Create Date: 2026-11-22 01:57:27.928126
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "0002_outbox"
down_revision: str | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "outbox_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "running",
                "done",
                "failed",
                name="outbox_state",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("lease_expires_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("dispatched_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("finished_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_outbox_item_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_outbox_item_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_item")),
    )
    with op.batch_alter_table("outbox_item", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_item_state_available_at", ["state", "available_at"], unique=False
        )
        batch_op.create_index(
            "ix_outbox_item_state_lease_expires_at", ["state", "lease_expires_at"], unique=False
        )

    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_key", sa.String(length=63), nullable=True))

    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_key", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("payment_gateway_key", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("accounting_system_key", sa.String(length=63), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.drop_column("accounting_system_key")
        batch_op.drop_column("payment_gateway_key")
        batch_op.drop_column("provider_key")

    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_column("provider_key")

    with op.batch_alter_table("outbox_item", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_item_state_lease_expires_at")
        batch_op.drop_index("ix_outbox_item_state_available_at")

    op.drop_table("outbox_item")
