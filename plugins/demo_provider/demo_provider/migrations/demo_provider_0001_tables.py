"""demo provider: subscriptions and requests

Revision ID: demo_provider_0001
Revises:
Create Date: 2026-11-22 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "demo_provider_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("demo_provider",)
depends_on: str | Sequence[str] | None = "0001_foundation"


def upgrade() -> None:
    op.create_table(
        "demo_provider_subscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_tenant_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_ref", sa.String(length=128), nullable=False),
        sa.Column("offer_id", sa.String(length=128), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_demo_provider_subscription")),
        sa.UniqueConstraint(
            "customer_tenant_id",
            "subscription_ref",
            name="uq_demo_provider_subscription_ref",
        ),
    )
    op.create_table(
        "demo_provider_request",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("customer_tenant_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_ref", sa.String(length=128), nullable=False),
        sa.Column("target_quantity", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("result_quantity", sa.Integer(), nullable=True),
        sa.Column("result_offer_id", sa.String(length=128), nullable=True),
        sa.Column("result_status", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("finished_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_demo_provider_request")),
    )


def downgrade() -> None:
    op.drop_table("demo_provider_request")
    op.drop_table("demo_provider_subscription")
