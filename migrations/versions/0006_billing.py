"""billing: contracts, invoices, credit notes, the payment ledger, numbering, runs

Revision ID: 0006_billing
Revises: 0005_licence_notified
Create Date: 2026-11-30 10:14:25.242476
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import portal.core.db

revision: str = "0006_billing"
down_revision: str | None = "0005_licence_notified"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_on", sa.Date(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "running",
                "done",
                "failed",
                name="billing_run_state",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("started_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("started_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("finished_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("contracts_total", sa.Integer(), nullable=False),
        sa.Column("contracts_done", sa.Integer(), nullable=False),
        sa.Column("invoices_created", sa.Integer(), nullable=False),
        sa.Column("credit_notes_created", sa.Integer(), nullable=False),
        sa.Column("lines_created", sa.Integer(), nullable=False),
        sa.Column("contracts_skipped", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_billing_run_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_run")),
    )
    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_billing_run_partner_id"), ["partner_id"], unique=False)
        batch_op.create_index(
            "ix_billing_run_partner_id_created_at", ["partner_id", "created_at"], unique=False
        )

    op.create_table(
        "billing_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_review", sa.Boolean(), nullable=False),
        sa.Column("invoice_prefix", sa.String(length=16), nullable=False),
        sa.Column("credit_note_prefix", sa.String(length=16), nullable=False),
        sa.Column("updated_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=300), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_billing_settings_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_settings")),
        sa.UniqueConstraint("partner_id", name=op.f("uq_billing_settings_partner_id")),
    )
    with op.batch_alter_table("billing_settings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_settings_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "invoice_number_counter",
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("invoice", "credit_note", name="document_kind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "last_number >= 0", name=op.f("ck_invoice_number_counter_last_number_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_invoice_number_counter_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("partner_id", "kind", name=op.f("pk_invoice_number_counter")),
    )
    op.create_table(
        "billing_contract",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "frequency",
            sa.Enum(
                "monthly",
                "quarterly",
                "annual",
                name="contract_frequency",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("anchor_on", sa.Date(), nullable=False),
        sa.Column("payment_terms_days", sa.Integer(), nullable=False),
        sa.Column("discount_ppm", sa.Integer(), nullable=False),
        sa.Column("prepaid_discount_ppm", sa.Integer(), nullable=False),
        sa.Column("tax_rate_ppm", sa.Integer(), nullable=False),
        sa.Column("tax_plugin_key", sa.String(length=63), nullable=True),
        sa.Column("autocharge", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "discount_ppm >= 0 AND discount_ppm <= 1000000",
            name=op.f("ck_billing_contract_discount_range"),
        ),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_billing_contract_currency_code")),
        sa.CheckConstraint(
            "prepaid_discount_ppm >= 0 AND prepaid_discount_ppm <= 1000000",
            name=op.f("ck_billing_contract_prepaid_discount_range"),
        ),
        sa.CheckConstraint(
            "payment_terms_days >= 0", name=op.f("ck_billing_contract_payment_terms_non_negative")
        ),
        sa.CheckConstraint(
            "tax_rate_ppm >= 0 AND tax_rate_ppm <= 1000000",
            name=op.f("ck_billing_contract_tax_rate_range"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_billing_contract_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_billing_contract_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_contract")),
        sa.UniqueConstraint(
            "customer_id", "name", name=op.f("uq_billing_contract_customer_id_name")
        ),
    )
    with op.batch_alter_table("billing_contract", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_contract_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_billing_contract_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "invoice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("billing_contract_id", sa.Integer(), nullable=False),
        sa.Column("billing_run_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(length=40), nullable=True),
        sa.Column(
            "state",
            sa.Enum("draft", "issued", "void", name="invoice_state", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_rate_ppm", sa.Integer(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=True),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column("issued_by", sa.String(length=300), nullable=True),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("voided_at", portal.core.db.UTCDateTime(), nullable=True),
        sa.Column("voided_by", sa.String(length=300), nullable=True),
        sa.Column("void_reason", sa.Text(), nullable=True),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "state <> 'issued' OR (number IS NOT NULL AND issued_on IS NOT NULL AND due_on IS NOT NULL)",
            name=op.f("ck_invoice_issued_is_numbered"),
        ),
        sa.CheckConstraint("period_end > period_start", name=op.f("ck_invoice_period_not_empty")),
        sa.CheckConstraint(
            "total_minor = subtotal_minor + tax_minor", name=op.f("ck_invoice_total_adds_up")
        ),
        sa.ForeignKeyConstraint(
            ["billing_contract_id"],
            ["billing_contract.id"],
            name=op.f("fk_invoice_billing_contract_id_billing_contract"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["billing_run_id"],
            ["billing_run.id"],
            name=op.f("fk_invoice_billing_run_id_billing_run"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_invoice_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_invoice_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice")),
        sa.UniqueConstraint(
            "billing_contract_id",
            "period_start",
            name=op.f("uq_invoice_billing_contract_id_period_start"),
        ),
        sa.UniqueConstraint("partner_id", "number", name=op.f("uq_invoice_partner_id_number")),
    )
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_billing_run_id"), ["billing_run_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_invoice_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(
            "ix_invoice_customer_id_issued_on", ["customer_id", "issued_on", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_invoice_partner_id"), ["partner_id"], unique=False)
        batch_op.create_index(
            "ix_invoice_partner_id_issued_on", ["partner_id", "issued_on", "id"], unique=False
        )
        batch_op.create_index(
            "ix_invoice_partner_id_state_due_on", ["partner_id", "state", "due_on"], unique=False
        )

    op.create_table(
        "credit_note",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("reduction", "void", name="credit_note_kind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum("draft", "issued", name="credit_note_state", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("number", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal_minor", sa.BigInteger(), nullable=False),
        sa.Column("tax_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=True),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "state <> 'issued' OR (number IS NOT NULL AND issued_on IS NOT NULL)",
            name=op.f("ck_credit_note_issued_is_numbered"),
        ),
        sa.CheckConstraint(
            "total_minor = subtotal_minor + tax_minor", name=op.f("ck_credit_note_total_adds_up")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_credit_note_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_credit_note_invoice_id_invoice"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_credit_note_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note")),
        sa.UniqueConstraint("invoice_id", "kind", name=op.f("uq_credit_note_invoice_id_kind")),
        sa.UniqueConstraint("partner_id", "number", name=op.f("uq_credit_note_partner_id_number")),
    )
    with op.batch_alter_table("credit_note", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_note_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_credit_note_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "invoice_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "advance",
                "addition",
                "reduction_credit",
                "usage",
                "discount",
                name="line_kind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("quantity", sa.String(length=40), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=True),
        sa.Column("unit_price", sa.String(length=40), nullable=False),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("total_days", sa.Integer(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_invoice_line_invoice_id_invoice"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscription.id"],
            name=op.f("fk_invoice_line_subscription_id_subscription"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_line")),
        sa.UniqueConstraint(
            "invoice_id", "position", name=op.f("uq_invoice_line_invoice_id_position")
        ),
    )
    with op.batch_alter_table("invoice_line", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_line_subscription_id"), ["subscription_id"], unique=False
        )

    op.create_table(
        "invoice_payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("payment", "refund", name="payment_kind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("gateway_key", sa.String(length=63), nullable=False),
        sa.Column("gateway_reference", sa.String(length=255), nullable=False),
        sa.Column("received_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("recorded_at", portal.core.db.UTCDateTime(), nullable=False),
        sa.Column("recorded_by", sa.String(length=300), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_invoice_payment_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
            name=op.f("fk_invoice_payment_customer_id_customer"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_invoice_payment_invoice_id_invoice"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partner.id"],
            name=op.f("fk_invoice_payment_partner_id_partner"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_payment")),
        sa.UniqueConstraint(
            "gateway_key",
            "gateway_reference",
            name=op.f("uq_invoice_payment_gateway_key_gateway_reference"),
        ),
    )
    with op.batch_alter_table("invoice_payment", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_invoice_payment_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_invoice_payment_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_invoice_payment_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "credit_note_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("credit_note_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "advance",
                "addition",
                "reduction_credit",
                "usage",
                "discount",
                name="line_kind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("quantity", sa.String(length=40), nullable=False),
        sa.Column("unit_price_minor", sa.BigInteger(), nullable=True),
        sa.Column("unit_price", sa.String(length=40), nullable=False),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("total_days", sa.Integer(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_note.id"],
            name=op.f("fk_credit_note_line_credit_note_id_credit_note"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscription.id"],
            name=op.f("fk_credit_note_line_subscription_id_subscription"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_line")),
        sa.UniqueConstraint(
            "credit_note_id", "position", name=op.f("uq_credit_note_line_credit_note_id_position")
        ),
    )
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.add_column(sa.Column("billing_contract_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_subscription_billing_contract_id"), ["billing_contract_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_subscription_billing_contract_id_billing_contract"),
            "billing_contract",
            ["billing_contract_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_subscription_billing_contract_id_billing_contract"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_subscription_billing_contract_id"))
        batch_op.drop_column("billing_contract_id")

    op.drop_table("credit_note_line")
    with op.batch_alter_table("invoice_payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_payment_partner_id"))
        batch_op.drop_index(batch_op.f("ix_invoice_payment_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_invoice_payment_customer_id"))

    op.drop_table("invoice_payment")
    with op.batch_alter_table("invoice_line", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_line_subscription_id"))

    op.drop_table("invoice_line")
    with op.batch_alter_table("credit_note", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_note_partner_id"))
        batch_op.drop_index(batch_op.f("ix_credit_note_customer_id"))

    op.drop_table("credit_note")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_partner_id_state_due_on")
        batch_op.drop_index("ix_invoice_partner_id_issued_on")
        batch_op.drop_index(batch_op.f("ix_invoice_partner_id"))
        batch_op.drop_index("ix_invoice_customer_id_issued_on")
        batch_op.drop_index(batch_op.f("ix_invoice_customer_id"))
        batch_op.drop_index(batch_op.f("ix_invoice_billing_run_id"))

    op.drop_table("invoice")
    with op.batch_alter_table("billing_contract", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_contract_partner_id"))
        batch_op.drop_index(batch_op.f("ix_billing_contract_customer_id"))

    op.drop_table("billing_contract")
    op.drop_table("invoice_number_counter")
    with op.batch_alter_table("billing_settings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_settings_partner_id"))

    op.drop_table("billing_settings")
    with op.batch_alter_table("billing_run", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_run_partner_id_created_at")
        batch_op.drop_index(batch_op.f("ix_billing_run_partner_id"))

    op.drop_table("billing_run")
