"""Issue 13, the payments part: the customer pays once, whatever runs first.

- Autopay and "Pay now" never both charge an invoice: one open charge at a time, the balance
  re-read under the invoice's lock, an autopay retry never charging a changed balance under a
  new key, an automatic charge that failed or was left unfinished no longer blocking Pay now (2);
- a replaced or aged Checkout Session is expired at Stripe before the next one opens, and a
  payment that leaves an invoice overpaid is flagged for staff (3);
- lost disputes and failed refunds move the balance, and the reconciliation finds refunds of
  payments older than its window (9);
- a repeated ``charge.refunded`` is deduplicated before Stripe is asked (10).

Against the fake Stripe on 127.0.0.1 through the real SDK, on every backend.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from portal.core.db import get_database, utcnow
from portal.features.billing.models import PaymentKind
from portal.features.billing.services import documents as billing_documents
from portal.features.billing.services import queries
from portal.features.identity.models import AuditEvent
from portal.features.payments.models import AttemptState, PaymentAttempt, PaymentDispute
from portal.features.payments.services import events as payment_events
from portal.features.payments.services.events import reconcile
from portal.features.payments.services.pay import BALANCE_CHANGED
from portal.integrations.registry import integrations
from tests.integration.payments_support import (
    attempts_of,
    issued_invoice,
    ledger_of,
    pay,
    signed_in,
)
from tests.integration.test_payments_autopay import draft_for, issue, run_all
from tests.integration.test_payments_stripe import session_id, setup_return
from tests.support import HttpsClient, Tenant, csrf_token

from stripe_payments.fake import DECLINE, SUCCEED, FakeStripe, Fault  # isort: skip

WEBHOOK_SECRET = "whsec_portal_payment_truth"
AUTOPAY = billing_documents.AUTOPAY_KIND


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe(webhook_secret=WEBHOOK_SECRET) as server:
        yield server
    assert not server.errors, "the fake Stripe failed:\n" + "\n".join(server.errors)


@pytest.fixture
def app(payment_apps: Callable[..., Flask], fake: FakeStripe) -> Flask:
    app: Flask = payment_apps(
        PORTAL_PLUGINS="stripe",
        PORTAL_PAYMENT_GATEWAY="stripe",
        PORTAL_BROKER_URL="memory://",
        PORTAL_PLUGIN_SETTINGS={
            "stripe": {
                "SECRET_KEY": "sk_test_portal_truth_0123456789",
                "WEBHOOK_SECRET": WEBHOOK_SECRET,
                "API_BASE": fake.url,
                "TIMEOUT_SECONDS": "5",
                "MAX_NETWORK_RETRIES": "0",
            }
        },
    )
    return app


@pytest.fixture
def finance(app: Flask, tenant: Tenant) -> HttpsClient:
    return signed_in(app)


# -- helpers ------------------------------------------------------------------------------------


def post_event(client: HttpsClient, fake: FakeStripe, event: dict[str, Any]) -> int:
    body, headers = fake.delivery(event)
    return int(client.post("/p/stripe/webhook", data=body, headers=headers).status_code)


def event_of(fake: FakeStripe, type_: str, object_id: str) -> dict[str, Any]:
    return next(e for e in fake.events_of(type_) if e["data"]["object"]["id"] == object_id)


def balance(app: Flask, invoice_id: int) -> int:
    with app.app_context(), get_database(app).sessions() as s:
        detail = queries.invoice_detail(s, invoice_id, today=date.max)
        assert detail is not None
        return detail.balance_minor


def save_card(app: Flask, finance: HttpsClient, fake: FakeStripe) -> None:
    token = csrf_token(finance.get("/payment-methods").data)
    started = finance.post("/payment-methods/add", data={"csrf_token": token})
    session = session_id(started.headers["Location"])
    fake.complete_setup(session, SUCCEED)
    finance.get(setup_return(app, session))


def paid_at_stripe(
    fake: FakeStripe, finance: HttpsClient, tenant: Tenant, invoice_id: int, amount: int, **kw: Any
) -> str:
    """A payment made at Stripe for the invoice, announced by its webhook: its PaymentIntent."""
    intent = fake.add_succeeded_payment(
        amount,
        invoice_ref=str(invoice_id),
        customer_ref=str(tenant.customers["a"].id),
        **kw,
    )
    assert (
        post_event(finance, fake, event_of(fake, "payment_intent.succeeded", intent["id"])) == 200
    )
    return str(intent["id"])


def off_session_intents(fake: FakeStripe, invoice_id: int) -> list[dict[str, Any]]:
    """The invoice's charges of a saved card (a customer's, made by no Checkout Session)."""
    from_pages = {s.get("payment_intent") for s in fake.sessions.values()}
    return [
        i
        for i in fake.intents.values()
        if i["metadata"].get("invoice_ref") == str(invoice_id)
        and i.get("customer")
        and i["id"] not in from_pages
    ]


def payment_sessions(fake: FakeStripe, invoice_id: int) -> list[dict[str, Any]]:
    return [
        s
        for s in fake.sessions.values()
        if s["mode"] == "payment" and s["metadata"].get("invoice_ref") == str(invoice_id)
    ]


def stripe_down(fake: FakeStripe, times: int = 50) -> None:
    fake.inject(Fault.server_error(503), times=times)


def stripe_up(fake: FakeStripe) -> None:
    with fake._lock:
        fake._faults.clear()


def autopay_invoice(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe, amount: int = 4_200
) -> int:
    """A saved card, and an invoice of an autocharge contract issued (its autopay queued)."""
    save_card(app, finance, fake)
    invoice_id = draft_for(app, tenant, amount=amount)
    issue(app, tenant, invoice_id)
    return invoice_id


def an_autopay_try_goes_unanswered(app: Flask, fake: FakeStripe) -> None:
    """Stripe does not answer the automatic charge: it may or may not have reached Stripe."""
    stripe_down(fake)
    assert run_all(app, AUTOPAY) == ["retry"]
    stripe_up(fake)


# -- 2. one charge at a time ---------------------------------------------------------------------


def test_pay_now_is_refused_while_an_automatic_charge_is_open(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    an_autopay_try_goes_unanswered(app, fake)  # the charge may or may not have reached Stripe
    refused = pay(finance, invoice_id, "42.00")
    assert refused.status_code != 302
    assert "An automatic payment of this invoice is being made." in refused.get_data(as_text=True)
    assert payment_sessions(fake, invoice_id) == []
    assert run_all(app, AUTOPAY) == ["done"]
    assert [p.amount_minor for p in ledger_of(app, invoice_id)] == [4_200]
    assert balance(app, invoice_id) == 0


def test_an_autopay_retry_never_charges_a_changed_balance_under_a_new_key(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    """Stripe did not answer the first try: it may have charged. 10.00 comes another way
    meanwhile; the retry must not charge 32.00 under a new key (84 on a 42.00 invoice if the
    first went through): the attempt closes, and the customer can still pay what is owed."""
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    an_autopay_try_goes_unanswered(app, fake)
    paid_at_stripe(fake, finance, tenant, invoice_id, 1_000)
    assert run_all(app, AUTOPAY) == ["done"]
    assert off_session_intents(fake, invoice_id) == []
    (attempt,) = attempts_of(app, invoice_id)
    assert (attempt.state, attempt.failure_code) == (AttemptState.FAILED, BALANCE_CHANGED)
    assert balance(app, invoice_id) == 3_200
    assert pay(finance, invoice_id, "32.00").status_code == 302


def test_an_autopay_charge_whose_answer_was_lost_is_not_charged_again_for_a_new_balance(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    """Review finding 2: 42.00 reached Stripe and succeeded, its answer was lost; 10.00 came
    another way; the retry charged 32.00 under a new key: 84.00 charged on 42.00."""
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    fake.inject(Fault.drop_after_commit(method="POST", path="/v1/payment_intents"))
    assert run_all(app, AUTOPAY) == ["retry"]
    assert [i["amount"] for i in off_session_intents(fake, invoice_id)] == [4_200]
    paid_at_stripe(fake, finance, tenant, invoice_id, 1_000)
    assert run_all(app, AUTOPAY) == ["done"]
    assert [i["amount"] for i in off_session_intents(fake, invoice_id)] == [4_200]
    (attempt,) = attempts_of(app, invoice_id)
    assert (attempt.state, attempt.failure_code) == (AttemptState.FAILED, BALANCE_CHANGED)


def test_a_failed_automatic_charge_no_longer_blocks_pay_now(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    """Review finding 5: an automatic charge still open (processing) fails later at Stripe:
    its ``payment_failed`` closes the attempt, and Pay now works again."""
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    an_autopay_try_goes_unanswered(app, fake)
    # as if the charge had answered "processing": the attempt knows its PaymentIntent
    intent = fake.add_succeeded_payment(
        4_200, invoice_ref=str(invoice_id), customer_ref=str(tenant.customers["a"].id)
    )
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(PaymentAttempt)
            .where(PaymentAttempt.invoice_id == invoice_id)
            .values(payment_ref=intent["id"])
        )
        s.commit()
    failed = copy.deepcopy(event_of(fake, "payment_intent.succeeded", intent["id"]))
    failed["id"] = failed["id"] + "_failed"
    failed["type"] = "payment_intent.payment_failed"
    failed["data"]["object"].update(
        status="requires_payment_method",
        amount_received=0,
        last_payment_error={
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    )
    assert post_event(finance, fake, failed) == 200
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.state is AttemptState.FAILED
    assert attempt.failure_code == "insufficient_funds"
    assert pay(finance, invoice_id, "42.00").status_code == 302
    charged = off_session_intents(fake, invoice_id)
    assert run_all(app, AUTOPAY) == ["done"]  # the late retry charges nothing
    assert off_session_intents(fake, invoice_id) == charged


def test_an_automatic_charge_left_open_for_a_day_no_longer_blocks_pay_now(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    """Review finding 5: the outbox gave up on it, or the worker died after committing it:
    an autopay attempt open and untouched for a day is closed by the next Pay now, and a late
    retry of the automatic charge then charges nothing."""
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    an_autopay_try_goes_unanswered(app, fake)
    assert pay(finance, invoice_id, "42.00").status_code != 302  # recent: still refused
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(PaymentAttempt)
            .where(PaymentAttempt.invoice_id == invoice_id)
            .values(updated_at=utcnow() - timedelta(days=1, minutes=1))
        )
        s.commit()
    assert pay(finance, invoice_id, "42.00").status_code == 302
    autopay_attempt, page = attempts_of(app, invoice_id)
    assert autopay_attempt.state is AttemptState.EXPIRED
    assert page.state is AttemptState.OPEN
    assert run_all(app, AUTOPAY) == ["done"]
    assert off_session_intents(fake, invoice_id) == []


def test_an_autopay_retry_charges_nothing_once_the_invoice_is_paid(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    an_autopay_try_goes_unanswered(app, fake)
    paid_at_stripe(fake, finance, tenant, invoice_id, 4_200)
    assert run_all(app, AUTOPAY) == ["done"]
    assert off_session_intents(fake, invoice_id) == []
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.state is not AttemptState.OPEN
    assert balance(app, invoice_id) == 0


def test_autopay_waits_while_the_customer_pays_on_the_checkout_page(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    started = pay(finance, invoice_id, "42.00")  # before the autopay item runs
    assert started.status_code == 302
    session = session_id(started.headers["Location"])
    assert run_all(app, AUTOPAY) != ["done"]
    assert off_session_intents(fake, invoice_id) == []
    fake.complete_checkout(session)
    (attempt,) = [a for a in attempts_of(app, invoice_id) if a.number > 0]
    finance.get(f"/payments/{attempt.id}?payment={session}")  # back on the portal: recorded
    assert set(run_all(app, AUTOPAY)) == {"done"}
    assert off_session_intents(fake, invoice_id) == []
    assert [p.amount_minor for p in ledger_of(app, invoice_id)] == [4_200]


def age_pages(app: Flask, invoice_id: int, hours: int = 24) -> None:
    """The invoice's payment pages were opened ``hours`` ago."""
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(PaymentAttempt)
            .where(PaymentAttempt.invoice_id == invoice_id, PaymentAttempt.number > 0)
            .values(created_at=utcnow() - timedelta(hours=hours))
        )
        s.commit()


def test_autopay_records_an_old_checkout_paid_meanwhile_instead_of_charging_again(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    """Found by the model-based test: the customer paid on the checkout page and never came
    back, and the webhook had not arrived a day later, when autopay (no longer waiting for a
    page that old) charged the card as well: 1452.00 on a 726.00 invoice."""
    invoice_id = autopay_invoice(app, tenant, finance, fake, 72_600)
    started = pay(finance, invoice_id, "726.00")
    fake.complete_checkout(session_id(started.headers["Location"]))
    age_pages(app, invoice_id)
    assert run_all(app, AUTOPAY) == ["done"]
    assert off_session_intents(fake, invoice_id) == []
    assert [p.amount_minor for p in ledger_of(app, invoice_id)] == [72_600]
    states = {a.number: a.state for a in attempts_of(app, invoice_id)}
    assert states[1] is AttemptState.SUCCEEDED
    assert balance(app, invoice_id) == 0


def test_autopay_closes_an_old_checkout_left_open_before_charging(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    page = session_id(pay(finance, invoice_id, "42.00").headers["Location"])
    age_pages(app, invoice_id)
    assert run_all(app, AUTOPAY) == ["done"]
    assert fake.sessions[page]["status"] == "expired"
    with pytest.raises(ValueError, match="not an open payment session"):
        fake.complete_checkout(page)
    assert [i["amount"] for i in off_session_intents(fake, invoice_id)] == [4_200]
    states = {a.number: a.state for a in attempts_of(app, invoice_id)}
    assert states == {0: AttemptState.SUCCEEDED, 1: AttemptState.EXPIRED}


def test_autopay_retries_when_stripe_cannot_close_an_old_checkout(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = autopay_invoice(app, tenant, finance, fake)
    page = session_id(pay(finance, invoice_id, "42.00").headers["Location"])
    age_pages(app, invoice_id)
    fake.inject(Fault.server_error(503, method="POST", path=f"/v1/checkout/sessions/{page}/expire"))
    assert run_all(app, AUTOPAY) == ["retry"]
    assert off_session_intents(fake, invoice_id) == []
    assert fake.sessions[page]["status"] == "open"


def test_pay_now_and_autopay_at_once_never_both_charge(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    """The two race on separate connections (threads; on PostgreSQL truly concurrent): after
    both, at most one of them reached Stripe for the invoice."""
    save_card(app, finance, fake)
    amounts = {draft_for(app, tenant, amount=a): a for a in (4_100, 4_200, 4_300, 4_400, 4_500)}
    invoices = list(amounts)
    clients = [signed_in(app) for _ in invoices]
    for invoice_id in invoices:
        issue(app, tenant, invoice_id)
    tokens = [
        csrf_token(c.get(f"/invoices/{i}").data) for c, i in zip(clients, invoices, strict=True)
    ]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def click(client: HttpsClient, invoice_id: int, token: str) -> None:
        try:
            barrier.wait(timeout=30)
            client.post(
                f"/invoices/{invoice_id}/pay",
                data={"csrf_token": token, "amount": f"{amounts[invoice_id] // 100}.00"},
            )
        except BaseException as error:
            errors.append(error)

    def autopay() -> None:
        try:
            barrier.wait(timeout=30)
            run_all(app, AUTOPAY)
        except BaseException as error:
            errors.append(error)

    for client, invoice_id, token in zip(clients, invoices, tokens, strict=True):
        barrier.reset()
        threads = [
            threading.Thread(target=click, args=(client, invoice_id, token)),
            threading.Thread(target=autopay),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    for invoice_id in invoices:
        charged = off_session_intents(fake, invoice_id)
        pages = [s for s in payment_sessions(fake, invoice_id) if s["status"] == "open"]
        assert not (charged and pages), (invoice_id, charged, pages)
        assert sum(i["amount"] for i in charged) <= amounts[invoice_id]


# -- 3. replaced and aged Checkout Sessions ------------------------------------------------------


def test_replacing_a_checkout_expires_the_old_session_before_the_new_one_opens(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=25_000)
    first = session_id(pay(finance, invoice_id, "100.00").headers["Location"])
    second = session_id(pay(finance, invoice_id, "50.00").headers["Location"])
    assert first != second
    assert fake.sessions[first]["status"] == "expired"
    assert fake.sessions[second]["status"] == "open"
    now = utcnow().timestamp()
    assert fake.sessions[second]["expires_at"] <= now + 23 * 3600 + 60
    with pytest.raises(ValueError, match="not an open payment session"):
        fake.complete_checkout(first)
    states = [a.state for a in attempts_of(app, invoice_id)]
    assert states == [AttemptState.SUPERSEDED, AttemptState.OPEN]


def test_an_attempt_too_old_to_reuse_has_its_session_expired(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=25_000)
    first = session_id(pay(finance, invoice_id, "100.00").headers["Location"])
    with app.app_context(), get_database(app).sessions() as s:
        s.execute(
            sa.update(PaymentAttempt)
            .where(PaymentAttempt.invoice_id == invoice_id)
            .values(created_at=utcnow() - timedelta(hours=23, minutes=5))
        )
        s.commit()
    second = session_id(pay(finance, invoice_id, "100.00").headers["Location"])
    assert second != first and fake.sessions[first]["status"] == "expired"
    assert [a.state for a in attempts_of(app, invoice_id)] == [
        AttemptState.EXPIRED,
        AttemptState.OPEN,
    ]


def test_a_replaced_session_paid_meanwhile_is_recorded_not_reopened(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=25_000)
    first = session_id(pay(finance, invoice_id, "100.00").headers["Location"])
    fake.complete_checkout(first)  # paid in another tab; no webhook yet
    again = pay(finance, invoice_id, "150.00")
    assert again.status_code == 302
    assert [p.amount_minor for p in ledger_of(app, invoice_id)] == [10_000]
    assert balance(app, invoice_id) == 15_000


def test_a_page_opened_for_an_attempt_replaced_meanwhile_is_never_handed_out(
    app: Flask,
    tenant: Tenant,
    finance: HttpsClient,
    fake: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding 3: click A (100.00) waits for Stripe's page; click B (50.00) replaces A
    meanwhile. A's page, when it comes, is expired at Stripe and never handed out: one payable
    page, B's."""
    invoice_id = issued_invoice(app, tenant, amount_minor=25_000)
    other = signed_in(app)
    gateway = integrations(app).payment_gateways.get("stripe")
    assert gateway is not None
    start = gateway.start_payment
    second: list[Any] = []

    def slow_start(request: Any) -> Any:
        if not second:  # A's call: B clicks (on its own connection) before Stripe answers A
            second.append(None)
            thread = threading.Thread(target=lambda: second.append(pay(other, invoice_id, "50.00")))
            thread.start()
            thread.join(timeout=60)
        return start(request)

    monkeypatch.setattr(gateway, "start_payment", slow_start)
    first = pay(finance, invoice_id, "100.00")
    assert second[-1].status_code == 302
    b_session = session_id(second[-1].headers["Location"])
    assert first.status_code != 302
    assert "This payment was replaced by a newer one. Start again." in first.get_data(as_text=True)
    opened = {s["id"]: s["status"] for s in payment_sessions(fake, invoice_id)}
    assert opened.pop(b_session) == "open"
    assert set(opened.values()) == {"expired"}
    states = [a.state for a in attempts_of(app, invoice_id)]
    assert states == [AttemptState.SUPERSEDED, AttemptState.OPEN]


def test_a_declined_card_closes_its_checkout_before_the_next_one_opens(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    """Found by the model-based test: Stripe's page stays open after a decline (the customer
    may try another card). The next Pay now finished the attempt as failed and opened a new
    page, and both pages then took the whole balance: 72.00 charged on a 36.00 invoice."""
    invoice_id = issued_invoice(app, tenant, amount_minor=3_600)
    first = session_id(pay(finance, invoice_id, "36.00").headers["Location"])
    fake.complete_checkout(first, DECLINE)
    second = session_id(pay(finance, invoice_id, "36.00").headers["Location"])
    assert second != first
    assert fake.sessions[first]["status"] == "expired"
    with pytest.raises(ValueError, match="not an open payment session"):
        fake.complete_checkout(first)
    fake.complete_checkout(second)
    states = [a.state for a in attempts_of(app, invoice_id)]
    assert states == [AttemptState.FAILED, AttemptState.OPEN]
    (failed, _) = attempts_of(app, invoice_id)
    assert failed.failure_code == "generic_decline"
    assert sum(i["amount"] for i in fake.intents.values() if i["status"] == "succeeded") == 3_600


def test_a_declined_card_seen_on_the_return_page_closes_its_checkout(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=3_600)
    first = session_id(pay(finance, invoice_id, "36.00").headers["Location"])
    fake.complete_checkout(first, DECLINE)
    (attempt,) = attempts_of(app, invoice_id)
    page = finance.get(f"/payments/{attempt.id}?payment={first}").get_data(as_text=True)
    assert "Your card was declined." in page
    assert fake.sessions[first]["status"] == "expired"
    (attempt,) = attempts_of(app, invoice_id)
    assert attempt.state is AttemptState.FAILED


def test_a_checkout_paid_with_another_card_after_a_decline_is_recorded_not_replaced(
    app: Flask,
    tenant: Tenant,
    finance: HttpsClient,
    fake: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The portal hears of the decline; before it closes the page, the customer pays on it
    with another card: the page cannot be closed, so the portal asks again, records the
    payment and opens nothing new."""
    invoice_id = issued_invoice(app, tenant, amount_minor=3_600)
    first = session_id(pay(finance, invoice_id, "36.00").headers["Location"])
    fake.complete_checkout(first, DECLINE)
    gateway = integrations(app).payment_gateways.get("stripe")
    assert gateway is not None
    ask = gateway.get_payment
    paid: list[str] = []

    def declined_then_paid(reference: str) -> Any:
        answer = ask(reference)
        if not paid:  # the customer's second card goes through right after this answer
            paid.append(str(fake.complete_checkout(first)["id"]))
        return answer

    monkeypatch.setattr(gateway, "get_payment", declined_then_paid)
    again = pay(finance, invoice_id, "36.00")
    (attempt,) = attempts_of(app, invoice_id)
    assert again.headers["Location"] == f"/payments/{attempt.id}"
    assert attempt.state is AttemptState.SUCCEEDED
    assert [p.gateway_reference for p in ledger_of(app, invoice_id)] == paid
    assert len(payment_sessions(fake, invoice_id)) == 1
    assert balance(app, invoice_id) == 0


def test_an_overpaying_payment_is_flagged_for_staff(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=5_000)
    paid_at_stripe(fake, finance, tenant, invoice_id, 5_000)
    second = paid_at_stripe(fake, finance, tenant, invoice_id, 3_000)
    assert balance(app, invoice_id) == -3_000
    with app.app_context(), get_database(app).sessions() as s:
        flags = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "payment.overpaid")
        ).all()
    assert [(f.detail["reference"], f.detail["overpaid_minor"]) for f in flags] == [(second, 3_000)]


def test_two_payments_recorded_at_once_still_flag_the_overpayment(
    app: Flask,
    tenant: Tenant,
    finance: HttpsClient,
    fake: FakeStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding 6: two webhooks record two payments at the same time; each must see the
    other's (the invoice's lock is taken before the ledger row), so the overpayment is flagged."""
    invoice_id = issued_invoice(app, tenant, amount_minor=5_000)
    intents = [
        fake.add_succeeded_payment(
            amount, invoice_ref=str(invoice_id), customer_ref=str(tenant.customers["a"].id)
        )["id"]
        for amount in (5_000, 3_000)
    ]
    insert = payment_events._ledger_insert
    met = threading.Barrier(2, timeout=3)

    def insert_then_meet(*args: Any, **kwargs: Any) -> Any:
        inserted = insert(*args, **kwargs)
        # both hold their uncommitted row here, unless one waits for the other's lock
        with contextlib.suppress(threading.BrokenBarrierError):
            met.wait()
        return inserted

    monkeypatch.setattr(payment_events, "_ledger_insert", insert_then_meet)
    statuses: list[int] = []
    clients = [signed_in(app) for _ in intents]

    def deliver(client: HttpsClient, intent: str) -> None:
        statuses.append(
            post_event(client, fake, event_of(fake, "payment_intent.succeeded", intent))
        )

    threads = [
        threading.Thread(target=deliver, args=(c, i)) for c, i in zip(clients, intents, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200, 200]
    assert balance(app, invoice_id) == -3_000
    with app.app_context(), get_database(app).sessions() as s:
        flags = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "payment.overpaid")
        ).all()
    assert [f.detail["overpaid_minor"] for f in flags] == [3_000]


# -- 9. disputes, failed refunds, old refunds -----------------------------------------------------


def test_a_lost_dispute_takes_the_money_back_and_a_won_one_does_not(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    lost_invoice = issued_invoice(app, tenant, amount_minor=5_000)
    won_invoice = issued_invoice(app, tenant, amount_minor=6_000)
    lost_pi = paid_at_stripe(fake, finance, tenant, lost_invoice, 5_000)
    won_pi = paid_at_stripe(fake, finance, tenant, won_invoice, 6_000)
    lost = fake.dispute(lost_pi)
    won = fake.dispute(won_pi)
    for dispute in (lost, won):
        assert (
            post_event(finance, fake, event_of(fake, "charge.dispute.created", dispute["id"]))
            == 200
        )
    fake.close_dispute(lost["id"], "lost")
    fake.close_dispute(won["id"], "won")
    for dispute in (lost, won):
        closed = event_of(fake, "charge.dispute.closed", dispute["id"])
        assert post_event(finance, fake, closed) == 200
        assert post_event(finance, fake, closed) == 200  # a duplicate changes nothing
    assert balance(app, lost_invoice) == 5_000
    assert balance(app, won_invoice) == 0
    assert [(p.kind, p.amount_minor) for p in ledger_of(app, lost_invoice)] == [
        (PaymentKind.PAYMENT, 5_000),
        (PaymentKind.REFUND, 5_000),
    ]
    with app.app_context(), get_database(app).sessions() as s:
        statuses = dict(
            s.execute(sa.select(PaymentDispute.dispute_ref, PaymentDispute.status)).all()
        )
    assert statuses == {lost["id"]: "lost", won["id"]: "won"}


def test_a_dispute_closed_before_its_created_event_arrives_still_counts(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=5_000)
    dispute = fake.dispute(paid_at_stripe(fake, finance, tenant, invoice_id, 5_000))
    fake.close_dispute(dispute["id"], "lost")
    assert post_event(finance, fake, event_of(fake, "charge.dispute.closed", dispute["id"])) == 200
    assert post_event(finance, fake, event_of(fake, "charge.dispute.created", dispute["id"])) == 200
    assert balance(app, invoice_id) == 5_000


@pytest.mark.parametrize("failure_first", [False, True])
def test_a_failed_refund_no_longer_counts(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe, failure_first: bool
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=5_000)
    intent = paid_at_stripe(fake, finance, tenant, invoice_id, 5_000)
    refund = fake.refund(intent, 2_000)
    refunded = copy.deepcopy(fake.events_of("charge.refunded")[-1])
    fake.fail_refund(refund["id"])
    failed = event_of(fake, "charge.refund.updated", refund["id"])
    order = [failed, refunded] if failure_first else [refunded, failed]
    if not failure_first:
        assert post_event(finance, fake, refunded) == 200
        assert balance(app, invoice_id) == 2_000
    for event in order:
        assert post_event(finance, fake, event) == 200
    assert balance(app, invoice_id) == 0
    for event in fake.events_of("refund.failed") + fake.events_of("refund.updated"):
        assert post_event(finance, fake, event) == 200
    assert balance(app, invoice_id) == 0


def test_the_reconciliation_finds_refunds_of_payments_older_than_its_window(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=5_000)
    old = int((utcnow() - timedelta(days=45)).timestamp())
    intent = paid_at_stripe(fake, finance, tenant, invoice_id, 5_000, created=old)
    fake.refund(intent, 1_500)  # its webhooks are lost
    with app.app_context():
        report = reconcile(app, gateway_keys=["stripe"])
        assert report.refunds_recorded == 1, report.line()
        assert reconcile(app, gateway_keys=["stripe"]).refunds_recorded == 0
    assert balance(app, invoice_id) == 1_500


# -- 10. a repeated charge.refunded -------------------------------------------------------------


def test_a_repeated_charge_refunded_is_deduplicated_before_stripe_is_asked(
    app: Flask, tenant: Tenant, finance: HttpsClient, fake: FakeStripe
) -> None:
    invoice_id = issued_invoice(app, tenant, amount_minor=5_000)
    intent = paid_at_stripe(fake, finance, tenant, invoice_id, 5_000)
    fake.refund(intent, 2_000)
    event = copy.deepcopy(fake.events_of("charge.refunded")[-1])
    del event["data"]["object"]["refunds"]  # as Stripe sends it: the refunds are not listed
    assert post_event(finance, fake, event) == 200  # Stripe is asked for them
    assert balance(app, invoice_id) == 2_000
    stripe_down(fake)
    assert post_event(finance, fake, event) == 200
    stripe_up(fake)
    assert balance(app, invoice_id) == 2_000
    assert integrations(app).payment_gateways.get("stripe") is not None
