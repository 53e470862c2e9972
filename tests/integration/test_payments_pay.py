"""Paying an invoice by card on the demo gateway, through the portal's pages: the whole balance
or part of it, declined and authenticated cards, the page the payer comes back to (pending
until the gateway confirms, paid once), refusals that change nothing, and the double click (A5)
and the retry after a lost answer (A6) that open one gateway session."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from portal.core.roles import CustomerRole
from portal.features.billing.models import InvoiceState
from portal.features.payments.models import AttemptState
from portal.integrations.results import TechnicalFailure
from tests.integration.invoice_pages_support import Line, contract, invoice
from tests.integration.payments_support import (
    ADMIN,
    AUTHENTICATE,
    DECLINED,
    SUCCEEDS,
    TODAY,
    attempts_of,
    back_to_portal,
    card_form,
    demo_gateway,
    gateway_payments,
    issued_invoice,
    ledger_of,
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


def status_text(html: str) -> str:
    import re

    match = re.search(r'data-testid="payment-state">([^<]+)<', html)
    assert match, "no payment state on the page"
    return match.group(1)


def test_a_finance_manager_pays_the_whole_balance_and_it_shows_paid_once(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=12_345)
    page = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert "Pay now" in page and 'value="123.45"' in page
    started = pay(finance, invoice_id)
    assert started.status_code == 302
    assert urlsplit(started.headers["Location"]).path.startswith("/p/demo_payments/pay/dp_")
    # back from the gateway's page: the return page asks the gateway, which says it is paid
    back = back_to_portal(finance, card_form(finance, started.headers["Location"], SUCCEEDS))
    html = back.get_data(as_text=True)
    assert status_text(html) == "Paid"
    assert "$123.45 was received" in html
    assert 'data-testid="balance-now">$0.00<' in html
    # coming back again (a reload, the browser's back button) records nothing more
    for _ in range(3):
        again = finance.get(urlsplit(back.request.url).path)
        assert status_text(again.get_data(as_text=True)) == "Paid"
    ledger = ledger_of(app, invoice_id)
    assert [(p.amount_minor, p.currency) for p in ledger] == [(12_345, "USD")]
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.state is AttemptState.SUCCEEDED
    assert ledger[0].gateway_reference == attempt.payment_ref == attempt.gateway_ref
    detail = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert 'id="invoice-status">Paid<' in detail
    assert 'id="invoice-balance">$0.00<' in detail
    assert "Pay now" not in detail  # nothing left to pay


def test_a_partial_payment_leaves_the_rest_to_pay(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=10_000)
    first = pay(finance, invoice_id, "40.00")
    back_to_portal(finance, card_form(finance, first.headers["Location"], SUCCEEDS))
    page = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert 'id="invoice-status">Partially paid<' in page
    assert 'id="invoice-balance">$60.00<' in page
    assert 'value="60.00"' in page  # the rest, filled in
    second = pay(finance, invoice_id)
    html = back_to_portal(
        finance, card_form(finance, second.headers["Location"], SUCCEEDS)
    ).get_data(as_text=True)
    assert status_text(html) == "Paid"
    assert [p.amount_minor for p in ledger_of(app, invoice_id)] == [4_000, 6_000]
    assert [a.number for a in attempts_of(app, invoice_id)] == [1, 2]
    keys = {a.idempotency_key for a in attempts_of(app, invoice_id)}
    assert len(keys) == 2  # one key per attempt


def test_a_declined_card_pays_nothing_and_the_next_try_is_a_new_attempt(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant)
    started = pay(finance, invoice_id)
    html = back_to_portal(
        finance, card_form(finance, started.headers["Location"], DECLINED)
    ).get_data(as_text=True)
    assert status_text(html) == "Not paid"
    assert "Your card was declined." in html
    assert "Try again with another card" in html
    assert ledger_of(app, invoice_id) == []
    # trying again opens a new gateway session under a new key: a declined one is never reused
    retry = pay(finance, invoice_id)
    assert retry.headers["Location"] != started.headers["Location"]
    back_to_portal(finance, card_form(finance, retry.headers["Location"], SUCCEEDS))
    states = [(a.number, a.state) for a in attempts_of(app, invoice_id)]
    assert states == [(1, AttemptState.FAILED), (2, AttemptState.SUCCEEDED)]
    assert len(gateway_payments(app, invoice_id)) == 2
    assert len(ledger_of(app, invoice_id)) == 1


def test_a_card_that_asks_for_authentication_is_paid_once_approved(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant)
    started = pay(finance, invoice_id)
    html = back_to_portal(
        finance, card_form(finance, started.headers["Location"], AUTHENTICATE)
    ).get_data(as_text=True)
    assert status_text(html) == "Paid"
    assert len(ledger_of(app, invoice_id)) == 1


def test_the_return_page_says_processing_until_the_gateway_confirms(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    """The payer comes back without finishing (or with a forged ``?payment=``): nothing is
    recorded, the page says Processing and keeps asking, and links back to the payment page."""
    invoice_id = issued_invoice(app, tenant)
    started = pay(finance, invoice_id)
    (attempt,) = attempts_of(app, invoice_id)
    page = finance.get(f"/payments/{attempt.id}?payment={attempt.gateway_ref}")
    html = page.get_data(as_text=True)
    assert status_text(html) == "Processing"
    assert f'hx-get="/payments/{attempt.id}/status"' in html and 'aria-live="polite"' in html
    assert f'href="{started.headers["Location"]}"' in html
    assert ledger_of(app, invoice_id) == []
    detail = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert 'id="invoice-status">Open<' in detail
    # the polled fragment turns to Paid once the gateway says so
    card_form(finance, started.headers["Location"], SUCCEEDS)
    fragment = finance.get(f"/payments/{attempt.id}/status").get_data(as_text=True)
    assert status_text(fragment) == "Paid" and "hx-get" not in fragment
    assert len(ledger_of(app, invoice_id)) == 1


def test_paying_again_after_the_gateway_took_the_money_records_it_instead(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    """The payer paid on the gateway's page but never came back (a closed tab, a lost
    redirect), then presses Pay again: the portal learns of the payment and charges nothing."""
    invoice_id = issued_invoice(app, tenant)
    started = pay(finance, invoice_id)
    card_form(finance, started.headers["Location"], SUCCEEDS)
    again = pay(finance, invoice_id, "100.00")
    assert again.status_code == 302
    (attempt,) = attempts_of(app, invoice_id)
    assert again.headers["Location"] == f"/payments/{attempt.id}"
    assert status_text(finance.get(again.headers["Location"]).get_data(as_text=True)) == "Paid"
    assert len(gateway_payments(app, invoice_id)) == 1
    assert len(ledger_of(app, invoice_id)) == 1


def test_another_amount_replaces_the_open_attempt(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant)
    first = pay(finance, invoice_id, "30.00")
    second = pay(finance, invoice_id, "50.00")
    assert first.headers["Location"] != second.headers["Location"]
    old, new = attempts_of(app, invoice_id)
    assert (old.state, new.state) == (AttemptState.SUPERSEDED, AttemptState.OPEN)
    assert (old.amount_minor, new.amount_minor) == (3_000, 5_000)
    assert status_text(finance.get(f"/payments/{old.id}").get_data(as_text=True)) == "Not finished"
    # the same amount again is the same attempt and the same gateway page
    assert pay(finance, invoice_id, "50.00").headers["Location"] == second.headers["Location"]
    assert len(attempts_of(app, invoice_id)) == 2


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0", "Enter an amount greater than zero."),
        ("-5", "Enter an amount greater than zero."),
        ("100.01", "You can pay at most the balance due, $100.00."),
        ("1e3", "Enter the amount as a number"),
        ("12.345", "USD amounts have at most 2 decimals."),
        ("ten", "Enter the amount as a number"),
        ("", "Enter the amount to pay."),
        ("1" * 41, "Field cannot be longer than 40 characters."),
    ],
)
def test_a_bad_amount_is_explained_beside_the_field_and_changes_nothing(
    app: Flask, tenant: Tenant, finance: HttpsClient, amount: str, message: str
) -> None:
    invoice_id = issued_invoice(app, tenant)
    response = pay(finance, invoice_id, amount)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in html
    assert 'id="amount-error"' in html and 'aria-invalid="true"' in html
    assert 'id="error-summary"' in html
    assert f'value="{amount}"' in html  # what was typed is kept
    assert attempts_of(app, invoice_id) == [] and ledger_of(app, invoice_id) == []


def test_the_amount_must_be_in_the_invoice_s_currency(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant)
    response = pay(finance, invoice_id, "10.00", currency="EUR")
    assert response.status_code == 422
    assert "Pay this invoice in USD, its currency." in response.get_data(as_text=True)
    assert attempts_of(app, invoice_id) == []


def test_zero_decimal_and_three_decimal_currencies_are_paid_in_their_own_units(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    yen = issued_invoice(app, tenant, amount_minor=12_345, currency="JPY")
    assert 'value="12345"' in finance.get(f"/invoices/{yen}").get_data(as_text=True)
    refused = pay(finance, yen, "100.5")
    assert "JPY amounts have at most 0 decimals." in refused.get_data(as_text=True)
    pay(finance, yen, "12000")
    dinar = issued_invoice(app, tenant, amount_minor=12_345, currency="KWD")
    pay(finance, dinar, "1.234")
    assert [(a.amount_minor, a.currency) for a in attempts_of(app, yen)] == [(12_000, "JPY")]
    assert [(a.amount_minor, a.currency) for a in attempts_of(app, dinar)] == [(1_234, "KWD")]
    assert [p.amount_minor for p in gateway_payments(app, yen)] == [12_000]


def test_a_spanish_reader_types_the_amount_with_a_decimal_comma(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=123_456)
    token = csrf_token(finance.get("/").data)
    finance.post("/language", data={"csrf_token": token, "locale": "es", "next": "/"})
    page = finance.get(f"/invoices/{invoice_id}").get_data(as_text=True)
    assert 'value="1234,56"' in page and "Pagar ahora" in page
    pay(finance, invoice_id, "1.000,50")
    assert [a.amount_minor for a in attempts_of(app, invoice_id)] == [100_050]
    ambiguous = pay(finance, invoice_id, "1000.50")  # a dot is not a decimal sign in Spanish
    assert ambiguous.status_code == 422
    assert [a.amount_minor for a in attempts_of(app, invoice_id)] == [100_050]


def test_void_paid_and_draft_invoices_cannot_be_paid(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    contract_id = contract(app, tenant, "a", name="Other")
    void = invoice(
        app,
        tenant,
        contract_id,
        number="INV-VOID",
        period=(TODAY.replace(day=1), TODAY.replace(day=1).replace(year=TODAY.year + 1)),
        lines=[Line("Seats", "1", "10.00", 1_000)],
        issued_on=TODAY,
        due_on=TODAY,
        state=InvoiceState.VOID,
        void_reason="wrong customer",
    )
    page = finance.get(f"/invoices/{void}").get_data(as_text=True)
    assert "Pay now" not in page
    token = csrf_token(page)
    refused = finance.post(f"/invoices/{void}/pay", data={"csrf_token": token, "amount": "10.00"})
    assert refused.status_code == 422
    assert "This invoice is void: there is nothing to pay." in refused.get_data(as_text=True)
    # paid in full: refused with the reason
    invoice_id = issued_invoice(app, tenant, amount_minor=1_000)
    back_to_portal(
        finance, card_form(finance, pay(finance, invoice_id).headers["Location"], SUCCEEDS)
    )
    paid = finance.post(
        f"/invoices/{invoice_id}/pay", data={"csrf_token": token, "amount": "10.00"}
    )
    assert "This invoice is paid: there is nothing left to pay." in paid.get_data(as_text=True)
    # a draft is not shown to customers at all
    draft = invoice(
        app,
        tenant,
        contract_id,
        number=None,
        period=(TODAY, TODAY.replace(year=TODAY.year + 1)),
        lines=[Line("Seats", "1", "10.00", 1_000)],
        state=InvoiceState.DRAFT,
    )
    assert (
        finance.post(
            f"/invoices/{draft}/pay", data={"csrf_token": token, "amount": "1"}
        ).status_code
        == 404
    )
    assert attempts_of(app, void) == [] and attempts_of(app, draft) == []
    assert len(attempts_of(app, invoice_id)) == 1


def test_only_administrators_and_finance_managers_pay(app: Flask, tenant: Tenant) -> None:
    invoice_id = issued_invoice(app, tenant)
    for role in CustomerRole:
        client: HttpsClient = app.test_client()  # type: ignore[assignment]
        sign_in(client, f"{role.value}@a.alpha.example")
        token = csrf_token(client.get("/").data)
        response = client.post(
            f"/invoices/{invoice_id}/pay", data={"csrf_token": token, "amount": "1.00"}
        )
        expected = 403 if role is CustomerRole.SUBSCRIPTION_MANAGER else 302
        assert response.status_code == expected, (role, response.status_code)
    assert len(attempts_of(app, invoice_id)) == 1  # the two allowed roles share the attempt


def test_another_customer_s_invoice_and_attempt_are_not_found(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    theirs = issued_invoice(app, tenant, "b")
    other = signed_in(app, "finance_manager@b.alpha.example")
    pay(other, theirs)
    (attempt,) = attempts_of(app, theirs)
    token = csrf_token(finance.get("/").data)
    assert finance.post(f"/invoices/{theirs}/pay", data={"csrf_token": token}).status_code == 404
    assert finance.get(f"/payments/{attempt.id}").status_code == 404
    assert finance.get(f"/payments/{attempt.id}/status").status_code == 404


def test_paying_needs_the_form_s_csrf_token(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    invoice_id = issued_invoice(app, tenant)
    response = finance.post(f"/invoices/{invoice_id}/pay", data={"amount": "10.00"})
    assert response.status_code == 400
    assert attempts_of(app, invoice_id) == []


def test_ten_concurrent_pay_clicks_open_one_gateway_session(app: Flask, tenant: Tenant) -> None:
    """A5: ten "Pay" POSTs at once, from two people of the account, open one attempt and one
    gateway payment; every one of them is sent to the same page."""
    invoice_id = issued_invoice(app, tenant)
    clients = [signed_in(app, email) for email in ("finance_manager@a.alpha.example", ADMIN)]
    forms = []
    for client in clients:
        page = client.get(f"/invoices/{invoice_id}").get_data(as_text=True)
        forms.append((client, csrf_token(page)))
    barrier = threading.Barrier(10)
    locations: list[str] = []
    errors: list[BaseException] = []

    def click(n: int) -> None:
        client, token = forms[n % 2]
        try:
            barrier.wait()
            response = client.post(
                f"/invoices/{invoice_id}/pay", data={"csrf_token": token, "amount": "100.00"}
            )
            assert response.status_code == 302, response.get_data(as_text=True)[:500]
            locations.append(response.headers["Location"])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=click, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(locations) == 10 and len(set(locations)) == 1
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.state is AttemptState.OPEN
    assert len(gateway_payments(app, invoice_id)) == 1


def test_a_lost_gateway_answer_is_retried_with_the_same_key(
    app: Flask, tenant: Tenant, finance: HttpsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A6: the gateway opened the payment but its answer never came: the payer is told nothing
    was charged and tries again; the retry carries the same key, so there is one payment."""
    invoice_id = issued_invoice(app, tenant)
    gateway = demo_gateway(app)
    real = gateway.start_payment

    def opened_but_lost(request: Any) -> Any:
        real(request)  # the gateway did the work...
        return TechnicalFailure("read timed out")  # ...and the answer was lost

    monkeypatch.setattr(gateway, "start_payment", opened_but_lost)
    lost = pay(finance, invoice_id)
    assert lost.status_code == 422
    assert "did not answer, and nothing was charged" in lost.get_data(as_text=True)
    monkeypatch.setattr(gateway, "start_payment", real)
    retried = pay(finance, invoice_id)
    assert retried.status_code == 302
    (attempt,) = attempts_of(app, invoice_id)
    (payment,) = gateway_payments(app, invoice_id)
    assert payment.idempotency_key == attempt.idempotency_key
    assert (
        urlsplit(retried.headers["Location"]).path == f"/p/demo_payments/pay/{payment.gateway_ref}"
    )


def test_without_a_payment_gateway_the_invoice_says_whom_to_ask(
    payment_apps: Callable[..., Flask], tenant: Tenant
) -> None:
    app = payment_apps()  # the same database, no gateway loaded
    invoice_id = issued_invoice(app, tenant)
    client = signed_in(app)
    response = pay(client, invoice_id)
    assert response.status_code == 422
    assert "Card payments are not available yet. Contact help@alpha.example" in response.get_data(
        as_text=True
    )
    assert attempts_of(app, invoice_id) == []


def _race(
    app: Flask,
    client: HttpsClient,
    return_path: str,
    deliveries: list[tuple[bytes, dict[str, str]]],
    pages: int = 4,
) -> None:
    """Load the return page ``pages`` times while ``deliveries`` arrive, all at once."""
    from portal.features.payments.services import events as payment_events

    gateway = demo_gateway(app)
    barrier = threading.Barrier(pages + len(deliveries))
    errors: list[BaseException] = []

    def come_back() -> None:
        try:
            barrier.wait()
            page = client.get(return_path).get_data(as_text=True)
            assert status_text(page) in {"Paid", "Processing"}
        except BaseException as error:
            errors.append(error)

    def webhook(delivery: tuple[bytes, dict[str, str]]) -> None:
        try:
            barrier.wait()
            with app.app_context():
                payment_events.receive_webhook(gateway, *delivery, app=app)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=come_back) for _ in range(pages)]
    threads += [threading.Thread(target=webhook, args=(d,)) for d in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def test_the_return_page_racing_the_webhooks_records_one_payment_and_one_receipt(
    app: Flask, tenant: Tenant, finance: HttpsClient
) -> None:
    """A4: the payer's browser comes back (and reloads) while the gateway's webhooks arrive
    (one delivered twice, and a second event about the same payment), all at once: one ledger
    row and one receipt, trial after trial."""
    import sqlalchemy as sa

    from portal.core.db import get_database
    from portal.features.payments.services import events as payment_events
    from portal.outbox.models import OutboxItem

    gateway = demo_gateway(app)
    for _trial in range(15):
        invoice_id = issued_invoice(app, tenant, amount_minor=2_500)
        started = pay(finance, invoice_id)
        back = card_form(finance, started.headers["Location"], SUCCEEDS)
        return_path = urlsplit(back.headers["Location"]).path
        (attempt,) = attempts_of(app, invoice_id)
        delivery = gateway.webhook_for(str(attempt.gateway_ref))
        other_event = gateway.webhook_for(str(attempt.gateway_ref))
        _race(app, finance, return_path, [delivery, delivery, other_event])
        (row,) = ledger_of(app, invoice_id)
        with app.app_context(), get_database(app).sessions() as s:
            receipts = [
                item
                for item in s.scalars(
                    sa.select(OutboxItem).where(OutboxItem.kind == payment_events.RECEIPT_KIND)
                )
                if item.payload.get("payment_id") == row.id
            ]
        assert len(receipts) == 1
        assert status_text(finance.get(return_path).get_data(as_text=True)) == "Paid"
