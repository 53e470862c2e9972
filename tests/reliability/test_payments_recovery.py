"""A6 and A7 of the reliability notes.

- A6 timeout after success: the fake Stripe does the work, keeps its answer, then drops the
  connection; the SDK's retry (or the caller's) carries the same idempotency key and gets the
  kept answer: one charge. The same key with another amount is an error, not a second charge.
- A7 lost webhooks: 50 payments succeeded at Stripe and none of their events arrived, beside 5
  Checkout Sessions nobody finished; one reconciliation run records all 50, a second records
  nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from stripe_payments import StripeGateway, StripeSettings
from stripe_payments.fake import SUCCEED, FakeStripe, Fault

from portal.core.db import utcnow
from portal.features.payments.services.events import reconcile
from portal.integrations.payments import (
    IDEMPOTENCY_KEY_REUSED,
    CardSetupRequest,
    CustomerProfile,
    PaymentRequest,
    PaymentStatus,
    SavedCardCharge,
)
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from tests.plugins.stripe_payments.support import ledger, make_invoice
from tests.reliability import payments_support as support
from tests.reliability.payments_support import World

world = support.world  # the module's fixture

LOST = 50
ORPHANED = 5


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server
    assert not server.errors, "\n".join(server.errors)


def gateway_for(fake: FakeStripe, retries: int) -> StripeGateway:
    return StripeGateway(
        StripeSettings.from_settings(
            {
                "SECRET_KEY": "sk_test_recovery",
                "WEBHOOK_SECRET": fake.webhook_secret,
                "API_BASE": fake.url,
                "TIMEOUT_SECONDS": "5",
                "MAX_NETWORK_RETRIES": str(retries),
            }
        )
    )


def saved_card(fake: FakeStripe, gateway: StripeGateway) -> tuple[str, str]:
    customer = gateway.ensure_customer(CustomerProfile("cus-key", "7", "Contoso"))
    assert isinstance(customer, Succeeded)
    setup = gateway.start_card_setup(CardSetupRequest("setup-key", "7", customer.value, "/c"))
    assert isinstance(setup, Succeeded)
    card = fake.complete_setup(setup.value.gateway_ref, SUCCEED)
    return customer.value, str(card["id"])


def charge(customer: str, card: str, amount: int = 5_000) -> SavedCardCharge:
    return SavedCardCharge("autopay-inv-9", "9", "7", customer, card, amount, "USD", "Invoice 9")


def test_a6_the_sdk_retries_a_dropped_charge_with_the_same_key_and_stripe_charges_once(
    fake: FakeStripe,
) -> None:
    gateway = gateway_for(fake, retries=2)
    customer, card = saved_card(fake, gateway)
    fake.inject(Fault.drop_after_commit(method="POST", path="/v1/payment_intents"))
    result = gateway.charge_saved_card(charge(customer, card))
    assert isinstance(result, Succeeded), result
    assert result.value.status is PaymentStatus.SUCCEEDED
    assert fake.post_requests("/v1/payment_intents") == 2, "the SDK sent it again"
    assert fake.effects("autopay-inv-9") == 1
    assert len(fake.charges) == 1
    assert [i["id"] for i in fake.intents.values()] == [result.value.payment_ref]


def test_a6_a_caller_retrying_after_a_timeout_gets_the_same_charge(fake: FakeStripe) -> None:
    gateway = gateway_for(fake, retries=0)
    customer, card = saved_card(fake, gateway)
    fake.inject(Fault.drop_after_commit(method="POST", path="/v1/payment_intents"))
    first = gateway.charge_saved_card(charge(customer, card))
    assert isinstance(first, TechnicalFailure), "the caller cannot know: retry later"
    again = gateway.charge_saved_card(charge(customer, card))
    assert isinstance(again, Succeeded) and again.value.status is PaymentStatus.SUCCEEDED
    assert fake.effects("autopay-inv-9") == 1
    assert len(fake.charges) == 1


def test_a6_the_same_key_for_another_amount_is_an_error_not_a_second_charge(
    fake: FakeStripe,
) -> None:
    gateway = gateway_for(fake, retries=2)
    customer, card = saved_card(fake, gateway)
    fake.inject(Fault.drop_after_commit(method="POST", path="/v1/payment_intents"))
    assert isinstance(gateway.charge_saved_card(charge(customer, card)), Succeeded)
    changed = gateway.charge_saved_card(charge(customer, card, amount=5_001))
    assert isinstance(changed, BusinessRejection)
    assert changed.code == IDEMPOTENCY_KEY_REUSED
    assert len(fake.charges) == 1 and len(fake.intents) == 1


def test_a6_a_dropped_checkout_session_is_one_session(fake: FakeStripe) -> None:
    gateway = gateway_for(fake, retries=2)
    request = PaymentRequest("pay-inv-9-1", "9", "7", 2_500, "USD", "Invoice 9", "/return")
    fake.inject(
        Fault.server_error(503, method="POST", path="/v1/checkout/sessions"),
        Fault.drop_after_commit(method="POST", path="/v1/checkout/sessions"),
    )
    first = gateway.start_payment(request)
    assert isinstance(first, Succeeded), first
    assert gateway.start_payment(request) == first
    assert len(fake.sessions) == 1
    assert fake.effects("pay-inv-9-1") == 1


def test_a7_one_reconciliation_records_every_lost_payment_and_a_second_nothing(
    world: World,
) -> None:
    since = utcnow() - timedelta(minutes=5)
    invoices = [make_invoice(world.app, world.partner) for _ in range(LOST)]
    for n, invoice in enumerate(invoices):
        world.fake.add_succeeded_payment(
            1_000 + n, invoice_ref=str(invoice), customer_ref=str(world.partner.customer_id)
        )
    for n in range(ORPHANED):  # opened, never paid
        started = world.gateway.start_payment(
            PaymentRequest(f"orphan-{n}", str(invoices[n]), "1", 700, "USD", "Invoice", "/r")
        )
        assert isinstance(started, Succeeded)
    with world.app.app_context():
        first = reconcile(world.app, since=since)
        second = reconcile(world.app, since=since)
    assert (first.listed, first.succeeded, first.recorded) == (LOST, LOST, LOST)
    assert first.unmatched == [] and first.failed_gateways == {}
    assert (second.recorded, second.refunds_recorded, second.unmatched) == (0, 0, [])
    rows = ledger(world.app)
    assert len(rows) == LOST
    assert sorted(amount for _, amount, _ in rows) == [1_000 + n for n in range(LOST)]
    assert world.receipts(invoices) == LOST
