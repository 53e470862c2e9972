"""Database plumbing: the declarative base, column types, and one engine and session per app.

Views and services reach the request's session through :data:`session`; it is created on first
use and closed at the end of the app context. Tenant scoping is applied to that session by
:mod:`portal.core.scoping`.

A request that only read ends its transaction with ``COMMIT`` rather than ``ROLLBACK``: psycopg
drops every prepared statement of a connection at a rollback, so PostgreSQL would plan each
query again on every page view. Anything else (an error response, an exception, pending
changes, a statement other than a ``SELECT`` sent in the transaction) still rolls back: a
request's writes are committed only by the code that made them, never by the teardown.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from flask import Flask, Response, current_app, g
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Enum,
    MetaData,
    Table,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, ExecutionContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import (
    DeclarativeBase,
    Session,
    sessionmaker,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator
from werkzeug.local import LocalProxy

log = logging.getLogger(__name__)

# Connection.info key: the connection's current transaction sent a statement that may write
WROTE = "portal_wrote"
# g key: the request produced a response below 400 (set after the view, before the teardown)
RESPONSE_OK = "_portal_response_ok"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every engine (SQLite keeps no zone: we store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Database:
    """The engine and session factory of one app."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def dispose(self) -> None:
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if url in {"sqlite://", "sqlite:///:memory:"}:
            kwargs["poolclass"] = StaticPool
    else:
        # a ping per checkout costs a round trip on every request; recycling old connections
        # covers server-side timeouts, and a dropped connection fails one request, not more
        kwargs["pool_recycle"] = 1800
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _transaction_begins)
    event.listen(engine, "before_cursor_execute", _note_writes)
    return engine


def _transaction_begins(connection: Connection) -> None:
    connection.info[WROTE] = False


def _note_writes(
    connection: Connection,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    _context: ExecutionContext | None,
    _executemany: bool,
) -> None:
    """Mark the transaction as written to by anything but a plain ``SELECT``.

    Deliberately blunt: a ``WITH``, a ``SAVEPOINT`` or a ``SET`` counts as a write too, which
    only means that such a request ends with a rollback, as every request used to.
    """
    if statement.lstrip()[:6].upper() != "SELECT":
        connection.info[WROTE] = True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def init_app(app: Flask) -> Database:
    database = Database(app.config["PORTAL_DATABASE_URL"])
    app.extensions["portal_db"] = database
    app.after_request(_note_response)
    app.teardown_appcontext(_close_session)
    return database


def get_database(app: Flask | None = None) -> Database:
    return cast(Database, (app or current_app).extensions["portal_db"])


def get_session() -> Session:
    """The session of the current app context, created on first use."""
    if "db_session" not in g:
        g.db_session = get_database().sessions()
    return cast(Session, g.db_session)


def _note_response(response: Response) -> Response:
    setattr(g, RESPONSE_OK, response.status_code < 400)  # error handlers' answers included
    return response


def _close_session(exc: BaseException | None) -> None:
    """End the app context's session: commit a request that only read, roll back the rest."""
    db_session: Session | None = g.pop("db_session", None)
    response_ok = g.pop(RESPONSE_OK, False)
    if db_session is None:
        return
    try:
        if exc is None and response_ok and _only_read(db_session):
            db_session.commit()  # keeps psycopg's prepared statements (see the module's doc)
    except SQLAlchemyError:
        # nothing was written, so nothing is lost; close() below rolls back or discards
        log.warning("could not commit a read-only request's transaction", exc_info=True)
    finally:
        db_session.close()


def _only_read(db_session: Session) -> bool:
    """Whether ending this session's transaction with a commit would change nothing.

    No pending change (a commit would flush it), an active transaction (a failed flush leaves
    it inactive), and only ``SELECT`` statements sent on its connection since it began.
    """
    if db_session.new or db_session.dirty or db_session.deleted:
        return False
    transaction = db_session.get_transaction()
    if transaction is None or not transaction.is_active:
        return False
    return db_session.connection().info.get(WROTE) is False


session: Session = cast(Session, LocalProxy(get_session))


def enum_column(enum_cls: type, name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        length=32,
        validate_strings=True,
    )


def insert_ignoring(connection: Connection, table: Table, conflict: Sequence[str] = ()) -> Any:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING`` for the connection's engine: a row that
    would break the unique constraint on ``conflict`` (any unique constraint when empty) is not
    inserted, and no error ends the transaction."""
    index_elements = list(conflict) or None
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    raise RuntimeError(f"billing needs PostgreSQL or SQLite, not {dialect}")
