"""Saved cards (payment profiles) on the demo gateway, through the portal's pages: adding one on
the gateway's form, what is shown of it, the default card, removing one (confirmed, and gone
at the gateway), a payment that keeps its card, and who may do any of it."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask

from portal.core.db import get_database
from portal.core.roles import CustomerRole
from portal.features.billing.models import BillingContract
from portal.features.payments.models import CardSetup, CardSetupState, PaymentCustomer
from portal.integrations.results import Succeeded
from tests.integration.payments_support import (
    ALWAYS_AUTHENTICATE,
    DECLINED,
    DECLINED_LATER,
    SUCCEEDS,
    back_to_portal,
    card_form,
    cards_of,
    demo_gateway,
    issued_invoice,
    pay,
    payments_app,
    signed_in,
)
from tests.support import HttpsClient, Tenant, csrf_token, sign_in


@pytest.fixture
def app(payment_apps: Callable[..., Flask]) -> Flask:
    return payments_app(payment_apps)


@pytest.fixture
def finance(app: Flask, tenant: Tenant) -> HttpsClient:
    return signed_in(app)


def add_card(client: HttpsClient, card: str) -> str:
    """Press "Add a card", type ``card`` on the gateway's form, come back; the page's text."""
    token = csrf_token(client.get("/payment-methods").data)
    started = client.post("/payment-methods/add", data={"csrf_token": token})
    assert started.status_code == 302, started.get_data(as_text=True)[:300]
    assert urlsplit(started.headers["Location"]).path.startswith("/p/demo_payments/setup/")
    back = back_to_portal(client, card_form(client, started.headers["Location"], card))
    assert back.status_code == 302 and back.headers["Location"] == "/payment-methods"
    return client.get("/payment-methods").get_data(as_text=True)


def card_rows(html: str) -> list[str]:
    """The saved-cards table's rows, as text."""
    body = html.split('id="saved-cards"', 1)[1].split("</tbody>", 1)[0]
    rows = [row.split(">", 1)[1] for row in body.split("<tr")[2:]]  # after the head's row
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in rows]


def test_an_empty_page_says_what_to_do(finance: HttpsClient) -> None:
    html = finance.get("/payment-methods").get_data(as_text=True)
    assert "No card is saved yet." in html
    assert "Add a card" in html
    assert (
        "Off: invoices are paid by hand. To have them charged automatically, ask help@alpha.example"
        in html
    )


def test_a_card_added_on_the_gateway_s_form_is_listed_and_becomes_the_default(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    html = add_card(finance, SUCCEEDS)
    assert "Visa ending in 4242 is saved." in html
    (row,) = card_rows(html)
    assert row.startswith("Visa •••• 4242")
    assert re.search(r"12/\d{4}", row) and "Default" in row
    (card,) = cards_of(app, tenant.customers["a"].id)
    assert card.is_default and card.card_ref.startswith("dpm_")
    # the gateway's customer was made once, and it holds the card
    with app.app_context(), get_database(app).sessions() as s:
        (customer,) = s.scalars(sa.select(PaymentCustomer)).all()
    listed = demo_gateway(app).list_cards(customer.gateway_customer_ref)
    assert isinstance(listed, Succeeded) and [c.card_ref for c in listed.value] == [card.card_ref]


def test_the_second_card_is_not_the_default_until_chosen(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    add_card(finance, SUCCEEDS)
    html = add_card(finance, DECLINED_LATER)
    assert [r.split(" ")[2] for r in card_rows(html)] == ["4242", "0341"]  # the default first
    first, second = cards_of(app, tenant.customers["a"].id)
    assert (first.is_default, second.is_default) == (True, False)
    token = csrf_token(html)
    made = finance.post(f"/payment-methods/{second.id}/default", data={"csrf_token": token})
    assert made.status_code == 302
    page = finance.get("/payment-methods").get_data(as_text=True)
    assert "Automatic payments now use Visa ending in 0341." in page
    first, second = cards_of(app, tenant.customers["a"].id)
    assert (first.is_default, second.is_default) == (False, True)


def test_a_declined_card_is_not_saved(app: Flask, tenant: Tenant, finance: HttpsClient) -> None:
    html = add_card(finance, DECLINED)
    assert "No card was saved: Your card was declined." in html
    assert cards_of(app, tenant.customers["a"].id) == []
    with app.app_context(), get_database(app).sessions() as s:
        (setup,) = s.scalars(sa.select(CardSetup)).all()
    assert setup.state is CardSetupState.FAILED


def test_a_card_that_needs_authentication_is_saved_after_it(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    html = add_card(finance, ALWAYS_AUTHENTICATE)
    assert "Visa ending in 3184 is saved." in html


def test_coming_back_without_finishing_saves_nothing(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    token = csrf_token(finance.get("/payment-methods").data)
    finance.post("/payment-methods/add", data={"csrf_token": token})
    with app.app_context(), get_database(app).sessions() as s:
        (setup,) = s.scalars(sa.select(CardSetup)).all()
    back = finance.get(f"/payment-methods/setups/{setup.id}?setup={setup.gateway_ref}")
    assert back.headers["Location"] == "/payment-methods"
    html = finance.get("/payment-methods").get_data(as_text=True)
    assert "No card was saved yet: the card form was not finished." in html
    assert cards_of(app, tenant.customers["a"].id) == []


def test_removing_the_default_card_asks_first_and_hands_autopay_to_the_next(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    add_card(finance, DECLINED_LATER)
    add_card(finance, SUCCEEDS)
    older, newer = cards_of(app, tenant.customers["a"].id)
    assert older.is_default
    confirm = finance.get(f"/payment-methods/{older.id}/remove").get_data(as_text=True)
    assert "Remove Visa ending in 0341?" in confirm
    assert "it can never be charged again" in confirm
    assert "Automatic payments will use Visa ending in 4242 instead." in confirm
    done = finance.post(
        f"/payment-methods/{older.id}/remove", data={"csrf_token": csrf_token(confirm)}
    )
    assert done.status_code == 302
    page = finance.get("/payment-methods").get_data(as_text=True)
    assert "Visa ending in 0341 is removed. Automatic payments now use Visa ending in 4242." in page
    (left,) = cards_of(app, tenant.customers["a"].id)
    assert left.id == newer.id and left.is_default
    listed = demo_gateway(app).list_cards(left.gateway_customer_ref)
    assert isinstance(listed, Succeeded) and [c.card_ref for c in listed.value] == [left.card_ref]
    # the last card: the page says autopay will have none
    last = finance.get(f"/payment-methods/{left.id}/remove").get_data(as_text=True)
    assert "No card will be left for automatic payments" in last


def test_autopay_status_names_the_card_and_the_contracts(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    from tests.integration.invoice_pages_support import contract

    contract_id = contract(app, tenant, "a", name="Microsoft 365")
    with app.app_context(), get_database(app).sessions() as s:
        s.get_one(BillingContract, contract_id).autocharge = True
        s.commit()
    html = finance.get("/payment-methods").get_data(as_text=True)
    assert "On, but no card is saved" in html and "Microsoft 365 (USD)" in html
    html = add_card(finance, SUCCEEDS)
    assert (
        "On: invoices of these contracts are charged to Visa ending in 4242 when they are issued."
        in html
    )


def test_a_payment_can_keep_its_card(app: Flask, tenant: Tenant, finance: HttpsClient) -> None:
    invoice_id = issued_invoice(app, tenant)
    page = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert "Save this card for automatic payments" in page
    started = pay(finance, invoice_id, save_card="y")
    back_to_portal(finance, card_form(finance, started.headers["Location"], SUCCEEDS))
    (card,) = cards_of(app, tenant.customers["a"].id)
    assert (card.last4, card.is_default) == ("4242", True)


def test_a_declined_payment_keeps_no_card(app: Flask, tenant: Tenant, finance: HttpsClient) -> None:
    invoice_id = issued_invoice(app, tenant)
    started = pay(finance, invoice_id, save_card="y")
    back_to_portal(finance, card_form(finance, started.headers["Location"], DECLINED))
    assert cards_of(app, tenant.customers["a"].id) == []


def test_another_customer_s_cards_and_setups_are_not_found(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    other = signed_in(app, "finance_manager@b.alpha.example")
    add_card(other, SUCCEEDS)
    (theirs,) = cards_of(app, tenant.customers["b"].id)
    with app.app_context(), get_database(app).sessions() as s:
        (setup,) = s.scalars(sa.select(CardSetup)).all()
    token = csrf_token(finance.get("/payment-methods").data)
    assert finance.get(f"/payment-methods/{theirs.id}/remove").status_code == 404
    for url in (f"/payment-methods/{theirs.id}/remove", f"/payment-methods/{theirs.id}/default"):
        assert finance.post(url, data={"csrf_token": token}).status_code == 404
    assert finance.get(f"/payment-methods/setups/{setup.id}").status_code == 404
    assert "4242" not in finance.get("/payment-methods").get_data(as_text=True)
    assert len(cards_of(app, tenant.customers["b"].id)) == 1


def test_only_administrators_and_finance_managers_manage_cards(app: Flask, tenant: Tenant) -> None:
    for role in CustomerRole:
        client: HttpsClient = app.test_client()  # type: ignore[assignment]
        sign_in(client, f"{role.value}@a.alpha.example")
        allowed = role is not CustomerRole.SUBSCRIPTION_MANAGER
        assert client.get("/payment-methods").status_code == (200 if allowed else 403)
        token = csrf_token(client.get("/").data)
        added = client.post("/payment-methods/add", data={"csrf_token": token})
        assert added.status_code == (302 if allowed else 403)
        dashboard = client.get("/").get_data(as_text=True)
        assert ('href="/payment-methods"' in dashboard) == allowed


def test_the_gateway_not_answering_leaves_the_card_as_it_was(
    app: Flask, tenant: Tenant, finance: HttpsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.integrations.results import TechnicalFailure

    add_card(finance, SUCCEEDS)
    (card,) = cards_of(app, tenant.customers["a"].id)
    monkeypatch.setattr(demo_gateway(app), "detach_card", lambda ref: TechnicalFailure("timed out"))
    page = finance.get(f"/payment-methods/{card.id}/remove").get_data(as_text=True)
    refused = finance.post(
        f"/payment-methods/{card.id}/remove", data={"csrf_token": csrf_token(page)}
    )
    assert refused.status_code == 422
    assert "did not answer, so the card is still saved" in refused.get_data(as_text=True)
    assert [c.id for c in cards_of(app, tenant.customers["a"].id)] == [card.id]
