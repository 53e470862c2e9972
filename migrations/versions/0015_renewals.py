"""renewals: the quantity scheduled for a subscription's next term, customers' renewal
instructions (auto-renew on/off, next term's quantity) sent to the provider, and the renewal
reminders mailed per term (issue 14, point 4)

Revision ID: 0015_renewals
Revises: 0014_credit_hold
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "0015_renewals"
down_revision: str | None = "0014_credit_hold"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tenant_columns(table: str) -> list[Any]:
    return [
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f(f"fk_{table}_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f(f"fk_{table}_partner_id_partner"),
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    op.add_column("subscription", sa.Column("renewal_quantity", sa.Integer(), nullable=True))
    op.create_table(
        "renewal_instruction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "auto_renew",
                "renewal_quantity",
                name="instruction_kind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "retrying",
                "done",
                "failed",
                "rejected",
                name="instruction_state",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("auto_renew", sa.Boolean(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("provider_answer", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=300), nullable=False),
        sa.Column("requested_by_user_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("finished_at", portal.core.db.UTCDateTime(), nullable=True),
        *_tenant_columns("renewal_instruction"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscription.id"],
            name=op.f("fk_renewal_instruction_subscription_id_subscription"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_user_id"],
            ["app_user.id"],
            name=op.f("fk_renewal_instruction_requested_by_user_id_app_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_renewal_instruction")),
        sa.UniqueConstraint("request_id", name=op.f("uq_renewal_instruction_request_id")),
    )
    for column in ("subscription_id", "partner_id", "customer_id"):
        op.create_index(op.f(f"ix_renewal_instruction_{column}"), "renewal_instruction", [column])
    op.create_table(
        "renewal_reminder",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("term_ends_on", sa.Date(), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("sent_at", portal.core.db.UTCDateTime(), nullable=True),
        *_tenant_columns("renewal_reminder"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscription.id"],
            name=op.f("fk_renewal_reminder_subscription_id_subscription"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_renewal_reminder")),
        sa.UniqueConstraint(
            "subscription_id",
            "term_ends_on",
            "days",
            name=op.f("uq_renewal_reminder_subscription_id_term_ends_on_days"),
        ),
    )
    for column in ("partner_id", "customer_id"):
        op.create_index(op.f(f"ix_renewal_reminder_{column}"), "renewal_reminder", [column])


def downgrade() -> None:
    op.drop_table("renewal_reminder")
    op.drop_table("renewal_instruction")
    # plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): batch mode would rebuild the table and,
    # with foreign keys on, cascade-delete what refers to it
    op.drop_column("subscription", "renewal_quantity")
