"""Alembic environment: the portal's metadata, and the URL the portal is configured with."""

from __future__ import annotations

from alembic import context

import portal.all_models  # noqa: F401  (registers every table)
from portal.core import config as portal_config
from portal.core.db import Base, make_engine

target_metadata = Base.metadata


def database_url() -> str:
    url = context.config.attributes.get("database_url")
    if url:
        return str(url)
    return portal_config.database_url(portal_config.load())


def core_tables_only(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate looks at the core's tables; plugins' tables belong to their own branches."""
    return type_ != "table" or name in target_metadata.tables


def run_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_name=core_tables_only,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
