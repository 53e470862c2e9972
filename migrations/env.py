"""Alembic environment: the portal's metadata, and the URL the portal is configured with."""

from __future__ import annotations

from alembic import context

import portal.models  # noqa: F401  (registers every table)
from portal import config as portal_config
from portal.db import Base, make_engine

target_metadata = Base.metadata


def database_url() -> str:
    url = context.config.attributes.get("database_url")
    if url:
        return str(url)
    return portal_config.database_url(portal_config.load())


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
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
