"""session user

Revision ID: 0003_session_user
Revises: 0002_outbox
Create Date: 2026-11-22 03:02:15.579869
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_session_user"
down_revision: str | None = "0002_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_web_session_user_id"), ["user_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_web_session_user_id_app_user"),
            "app_user",
            ["user_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:

    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_web_session_user_id_app_user"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_web_session_user_id"))
        batch_op.drop_column("user_id")
