"""payment profiles: payment attempts, the gateway's customers, saved cards, card setups and
the staff's single-use card links (issue 6)

Revision ID: 0008_payment_profiles
Revises: 0007_payments
Create Date: 2026-11-30 10:56:16.071972
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "0008_payment_profiles"
down_revision: str | None = "0007_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "card_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("used_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_card_link_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_card_link_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_link")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_card_link_token_hash")),
    )
    with op.batch_alter_table("card_link", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_card_link_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_card_link_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "payment_customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_key", sa.String(length=63), nullable=False),
        sa.Column("gateway_customer_ref", sa.String(length=255), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_payment_customer_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_payment_customer_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_customer")),
        sa.UniqueConstraint(
            "customer_id", "gateway_key", name=op.f("uq_payment_customer_customer_id_gateway_key")
        ),
        sa.UniqueConstraint(
            "gateway_key",
            "gateway_customer_ref",
            name=op.f("uq_payment_customer_gateway_key_gateway_customer_ref"),
        ),
    )
    with op.batch_alter_table("payment_customer", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_customer_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_customer_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "payment_profile",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_key", sa.String(length=63), nullable=False),
        sa.Column("card_ref", sa.String(length=255), nullable=False),
        sa.Column("gateway_customer_ref", sa.String(length=255), nullable=False),
        sa.Column("brand", sa.String(length=40), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("exp_month", sa.Integer(), nullable=False),
        sa.Column("exp_year", sa.Integer(), nullable=False),
        sa.Column("default_for", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "default_for IS NULL OR default_for = customer_id",
            name=op.f("ck_payment_profile_default_own"),
        ),
        sa.CheckConstraint(
            "exp_month BETWEEN 1 AND 12", name=op.f("ck_payment_profile_exp_month_range")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_payment_profile_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_payment_profile_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_profile")),
        sa.UniqueConstraint("default_for", name=op.f("uq_payment_profile_default_for")),
        sa.UniqueConstraint(
            "gateway_key", "card_ref", name=op.f("uq_payment_profile_gateway_key_card_ref")
        ),
    )
    with op.batch_alter_table("payment_profile", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_profile_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_profile_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "card_setup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway_key", sa.String(length=63), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("gateway_ref", sa.String(length=255), nullable=True),
        sa.Column("redirect_url", sa.String(length=2000), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "open", "succeeded", "failed", name="card_setup_state", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column("card_link_id", sa.Integer(), nullable=True),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("finished_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["card_link_id"],
            ["card_link.id"],
            name=op.f("fk_card_setup_card_link_id_card_link"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_card_setup_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_card_setup_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_setup")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_card_setup_idempotency_key")),
    )
    with op.batch_alter_table("card_setup", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_card_setup_card_link_id"), ["card_link_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_card_setup_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_card_setup_gateway_ref"), ["gateway_ref"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_card_setup_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "payment_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "on_session", "autopay", name="payment_attempt_kind", native_enum=False, length=32
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "open",
                "succeeded",
                "failed",
                "superseded",
                "expired",
                name="payment_attempt_state",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("gateway_key", sa.String(length=63), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("gateway_ref", sa.String(length=255), nullable=True),
        sa.Column("redirect_url", sa.String(length=2000), nullable=True),
        sa.Column("payment_ref", sa.String(length=255), nullable=True),
        sa.Column("card_ref", sa.String(length=255), nullable=True),
        sa.Column("save_card", sa.Boolean(), nullable=False),
        sa.Column("failure_code", sa.String(length=100), nullable=True),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("finished_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "(kind = 'autopay') = (number = 0)",
            name=op.f("ck_payment_attempt_autopay_is_number_zero"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_payment_attempt_amount_positive")),
        sa.CheckConstraint("number >= 0", name=op.f("ck_payment_attempt_number_non_negative")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_payment_attempt_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_payment_attempt_invoice_id_invoice"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_payment_attempt_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_attempt")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payment_attempt_idempotency_key")),
        sa.UniqueConstraint(
            "invoice_id", "number", name=op.f("uq_payment_attempt_invoice_id_number")
        ),
    )
    with op.batch_alter_table("payment_attempt", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_attempt_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            "ix_payment_attempt_customer_id_kind_state",
            ["customer_id", "kind", "state"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_payment_attempt_gateway_ref"), ["gateway_ref"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_attempt_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_payment_attempt_partner_id"), ["partner_id"], unique=False
        )
        batch_op.create_index(
            "uq_payment_attempt_open_invoice",
            ["invoice_id"],
            unique=True,
            postgresql_where=sa.text("state = 'open' AND number > 0"),
            sqlite_where=sa.text("state = 'open' AND number > 0"),
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_attempt", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_payment_attempt_open_invoice",
            postgresql_where=sa.text("state = 'open' AND number > 0"),
            sqlite_where=sa.text("state = 'open' AND number > 0"),
        )
        batch_op.drop_index(batch_op.f("ix_payment_attempt_partner_id"))
        batch_op.drop_index(batch_op.f("ix_payment_attempt_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_payment_attempt_gateway_ref"))
        batch_op.drop_index("ix_payment_attempt_customer_id_kind_state")
        batch_op.drop_index(batch_op.f("ix_payment_attempt_customer_id"))

    op.drop_table("payment_attempt")
    with op.batch_alter_table("card_setup", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_card_setup_partner_id"))
        batch_op.drop_index(batch_op.f("ix_card_setup_gateway_ref"))
        batch_op.drop_index(batch_op.f("ix_card_setup_customer_id"))
        batch_op.drop_index(batch_op.f("ix_card_setup_card_link_id"))

    op.drop_table("card_setup")
    with op.batch_alter_table("payment_profile", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_profile_partner_id"))
        batch_op.drop_index(batch_op.f("ix_payment_profile_customer_id"))

    op.drop_table("payment_profile")
    with op.batch_alter_table("payment_customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_customer_partner_id"))
        batch_op.drop_index(batch_op.f("ix_payment_customer_customer_id"))

    op.drop_table("payment_customer")
    with op.batch_alter_table("card_link", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_card_link_partner_id"))
        batch_op.drop_index(batch_op.f("ix_card_link_customer_id"))

    op.drop_table("card_link")
