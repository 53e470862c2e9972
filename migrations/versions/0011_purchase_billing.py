"""purchase billing: a purchase's first periods on an invoice made for it at once (issue 13,
defect 8): invoice.purchase_change_id, one such invoice per purchase; the one-invoice-per-
contract-and-period guarantee now holds for the run's invoices (purchase_change_id NULL)

Revision ID: 0011_purchase_billing
Revises: 0008_payment_profiles
Create Date: 2026-12-07 15:40:00.000000
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_purchase_billing"
down_revision: str | None = "0008_payment_profiles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUN_INVOICES = sa.text("purchase_change_id IS NULL")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _upgrade_sqlite()
        return
    op.add_column("invoice", sa.Column("purchase_change_id", sa.Integer(), nullable=True))
    op.create_foreign_key(
        op.f("fk_invoice_purchase_change_id_licence_change"),
        "invoice",
        "licence_change",
        ["purchase_change_id"],
        ["id"],
        ondelete="RESTRICT",
    )
    op.drop_constraint("uq_invoice_billing_contract_id_period_start", "invoice", type_="unique")
    _indexes()


def _indexes() -> None:
    op.create_index("uq_invoice_purchase_change_id", "invoice", ["purchase_change_id"], unique=True)
    op.create_index(
        "uq_invoice_billing_contract_id_period_start",
        "invoice",
        ["billing_contract_id", "period_start"],
        unique=True,
        postgresql_where=RUN_INVOICES,
        sqlite_where=RUN_INVOICES,
    )


OLD_UNIQUE = re.compile(
    r",\s*CONSTRAINT\s+\"?uq_invoice_billing_contract_id_period_start\"?\s+UNIQUE\s*"
    r"\(\s*billing_contract_id\s*,\s*period_start\s*\)",
    re.IGNORECASE,
)


def _upgrade_sqlite() -> None:
    """SQLite cannot drop a table's UNIQUE constraint: the table is rebuilt. Not with Alembic's
    batch mode: it drops the old table, and with foreign keys on (the portal's engines) that
    deletes every invoice's lines and credit notes first (ON DELETE CASCADE). Here the old
    table is renamed aside without its children following it (legacy_alter_table), the new
    one takes its name, and the rows are copied: the children's references stay good."""
    bind = op.get_bind()
    # foreign key actions off while the table is swapped (possible outside a transaction only)
    bind.exec_driver_sql("PRAGMA foreign_keys = OFF")
    if (
        bind.exec_driver_sql("PRAGMA foreign_keys").scalar()
        and bind.exec_driver_sql("SELECT 1 FROM invoice LIMIT 1").first()
    ):
        raise RuntimeError(
            "0011_purchase_billing rebuilds the invoice table; on SQLite that needs foreign "
            "keys off, which cannot be switched inside a transaction: run "
            "`alembic upgrade 0011_purchase_billing` on its own, then the rest"
        )
    create = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'invoice'"
    ).scalar_one()
    indexes = [
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'invoice' "
            "AND sql IS NOT NULL"
        )
    ]
    new, replaced = OLD_UNIQUE.subn("", create)
    assert replaced == 1, "invoice's unique (billing_contract_id, period_start) not found"
    # the column after the last one, before the table's constraints; its foreign key last
    first_constraint = re.search(r",\s*CONSTRAINT\s", new)
    assert first_constraint is not None
    at = first_constraint.start()
    new = new[:at] + ",\n\tpurchase_change_id INTEGER" + new[at:]
    new = new.rstrip().removesuffix(")") + (
        ",\n\tCONSTRAINT fk_invoice_purchase_change_id_licence_change FOREIGN KEY"
        "(purchase_change_id) REFERENCES licence_change (id) ON DELETE RESTRICT\n)"
    )
    columns = ", ".join(f'"{row[1]}"' for row in bind.exec_driver_sql("PRAGMA table_info(invoice)"))
    bind.exec_driver_sql("PRAGMA legacy_alter_table = ON")
    try:
        bind.exec_driver_sql("ALTER TABLE invoice RENAME TO _invoice_before_0011")
        bind.exec_driver_sql(new)
        bind.exec_driver_sql(
            f"INSERT INTO invoice ({columns}) SELECT {columns} FROM _invoice_before_0011"  # noqa: S608
        )
        bind.exec_driver_sql("DROP TABLE _invoice_before_0011")
    finally:
        bind.exec_driver_sql("PRAGMA legacy_alter_table = OFF")
    for index in indexes:
        bind.exec_driver_sql(index)
    _indexes()
    bind.exec_driver_sql("PRAGMA foreign_keys = ON")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:  # batch mode drops the table: no cascade to its lines (see _upgrade_sqlite)
        op.execute("PRAGMA foreign_keys = OFF")
    op.drop_index("uq_invoice_billing_contract_id_period_start", table_name="invoice")
    op.drop_index("uq_invoice_purchase_change_id", table_name="invoice")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_invoice_billing_contract_id_period_start", ["billing_contract_id", "period_start"]
        )
        batch_op.drop_constraint(
            batch_op.f("fk_invoice_purchase_change_id_licence_change"), type_="foreignkey"
        )
        batch_op.drop_column("purchase_change_id")
    if sqlite:
        op.execute("PRAGMA foreign_keys = ON")
