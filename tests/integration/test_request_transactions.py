"""How a request's database transaction ends: a page that only read commits (so psycopg keeps
its prepared statements), and nothing a request wrote is ever committed by that ending — not
after an exception, an error answer, a flush, a pending change or a raw ``UPDATE``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from flask import Flask, abort
from sqlalchemy import Connection, event, select, text

from portal.core import db
from portal.core.db import get_database
from portal.features.tenancy.models import Partner
from portal.web.access import public
from tests.support import HttpsClient, Tenant, sign_in

CHANGED = "Changed By A Request"


def _partner(tenant: Tenant) -> Partner:
    found = db.session.scalars(select(Partner).where(Partner.id == tenant.partner.id)).one()
    return found


def _routes(tenant: Tenant) -> dict[str, Callable[[], str]]:
    """Test-only views, each ending its request in a different way."""

    def read() -> str:
        return _partner(tenant).name

    def read_then_404() -> str:
        _partner(tenant)
        abort(404)

    def read_then_raise() -> str:
        _partner(tenant)
        raise RuntimeError("the view failed after reading")

    def flush_then_raise() -> str:
        _partner(tenant).name = CHANGED
        db.session.flush()
        raise RuntimeError("the view failed after writing")

    def flush_then_answer() -> str:
        _partner(tenant).name = CHANGED
        db.session.flush()  # written in the transaction, never committed by the view
        return "ok"

    def pending_then_answer() -> str:
        _partner(tenant).name = CHANGED  # not flushed: a commit would flush it
        return "ok"

    def raw_update_then_answer() -> str:
        db.session.execute(
            text("UPDATE partner SET name = :name WHERE id = :id"),
            {"name": CHANGED, "id": tenant.partner.id},
        )
        return "ok"

    return {
        "read": read,
        "read_then_404": read_then_404,
        "read_then_raise": read_then_raise,
        "flush_then_raise": flush_then_raise,
        "flush_then_answer": flush_then_answer,
        "pending_then_answer": pending_then_answer,
        "raw_update_then_answer": raw_update_then_answer,
    }


@pytest.fixture
def tx_app(app: Flask, tenant: Tenant) -> Flask:
    for name, view in _routes(tenant).items():
        app.add_url_rule(f"/_tx/{name}", f"tx_{name}", public(view))
    return app


@pytest.fixture
def tx_client(tx_app: Flask) -> HttpsClient:
    """A visitor whose server-side session already holds its CSRF token, so the session store
    writes nothing during the requests under test: every transaction end seen is the request's.
    """
    client: HttpsClient = tx_app.test_client()  # type: ignore[assignment]
    assert client.get("/login").status_code == 200
    return client


@contextmanager
def transaction_ends(app: Flask) -> Iterator[list[str]]:
    """The ``commit``/``rollback`` events of the app's engine while the block runs."""
    engine = get_database(app).engine
    ends: list[str] = []

    def on_commit(_connection: Connection) -> None:
        ends.append("commit")

    def on_rollback(_connection: Connection) -> None:
        ends.append("rollback")

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "rollback", on_rollback)
    try:
        yield ends
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "rollback", on_rollback)


def _stored_name(app: Flask, tenant: Tenant) -> str:
    with app.app_context(), get_database(app).sessions() as s:
        return s.scalars(select(Partner.name).where(Partner.id == tenant.partner.id)).one()


def test_a_page_that_only_read_ends_with_a_commit(
    tx_app: Flask, tx_client: HttpsClient, tenant: Tenant
) -> None:
    with transaction_ends(tx_app) as ends:
        response = tx_client.get("/_tx/read")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == tenant.partner.name
    assert ends == ["commit"]


def test_the_signed_in_dashboard_and_account_pages_end_with_a_commit(
    tx_app: Flask, tenant: Tenant
) -> None:
    client: HttpsClient = tx_app.test_client()  # type: ignore[assignment]
    sign_in(client, "administrator@a.alpha.example")
    for path in ("/", "/account/"):
        client.get(path)  # the first view may store a CSRF token in the session (its own commit)
        with transaction_ends(tx_app) as ends:
            assert client.get(path).status_code == 200
        assert ends == ["commit"], path


@pytest.mark.parametrize(
    ("route", "status"),
    [
        ("flush_then_raise", 500),
        ("flush_then_answer", 200),
        ("pending_then_answer", 200),
        ("raw_update_then_answer", 200),
    ],
)
def test_nothing_a_request_wrote_is_committed_when_it_ends(
    tx_app: Flask, tx_client: HttpsClient, tenant: Tenant, route: str, status: int
) -> None:
    with transaction_ends(tx_app) as ends:
        response = tx_client.get(f"/_tx/{route}")
    assert response.status_code == status
    assert ends == ["rollback"]
    assert _stored_name(tx_app, tenant) == tenant.partner.name


@pytest.mark.parametrize(("route", "status"), [("read_then_404", 404), ("read_then_raise", 500)])
def test_an_error_answer_rolls_back_even_after_reads_only(
    tx_app: Flask, tx_client: HttpsClient, route: str, status: int
) -> None:
    with transaction_ends(tx_app) as ends:
        assert tx_client.get(f"/_tx/{route}").status_code == status
    assert ends == ["rollback"]
