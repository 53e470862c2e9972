"""A2 and A8 of the reliability notes, on PostgreSQL, through the real webhook path
(:func:`portal.features.payments.services.events.receive_webhook`: signature verified by the SDK,
the event and its effect in one transaction) with events made and signed by the fake Stripe.

- A2 out of order: every permutation Hypothesis draws of a payment's events (an attempt that
  failed, the success, Checkout's completion, two partial refunds and their events, a dispute),
  with duplicates, ends in the state the ordered sequence ends in (≥ 500 examples).
- A8 refunds and partial payments: for any mix of partial payments and refunds delivered in any
  order, what the invoice shows as paid is Σ payments - Σ refunds of what Stripe holds, to the
  minor unit, and its status is derived from that (never stored: the invoice has no such
  column).
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from stripe_payments.fake import DECLINE, SUCCEED

from portal.core.db import get_database
from portal.features.billing.models import Invoice, InvoicePayment, InvoiceState, InvoiceStatus
from portal.features.billing.services.queries import invoice_detail, invoice_status, list_invoices
from portal.features.payments.models import PaymentDispute
from portal.features.payments.services.events import receive_webhook
from portal.integrations.payments import PaymentRequest
from portal.integrations.results import Succeeded
from tests.plugins.stripe_payments.support import make_invoice
from tests.reliability import payments_support as support
from tests.reliability.payments_support import World

world = support.world  # the module's fixture

PERMUTATIONS = int(os.environ.get("PAYMENTS_A2_EXAMPLES", "500"))
LEDGER_EXAMPLES = int(os.environ.get("PAYMENTS_A8_EXAMPLES", "150"))
TOTAL = 10_000
TODAY = date(2026, 1, 15)
_ORDERED: dict[str, Any] = {}


def scenario(world: World) -> tuple[int, list[dict[str, Any]], dict[str, str]]:
    """A paid invoice's whole story at Stripe: (invoice, its events in order, ref -> role)."""
    fake = world.fake
    invoice = make_invoice(world.app, world.partner, TOTAL)
    started = world.gateway.start_payment(
        PaymentRequest(
            f"a2-{invoice}", str(invoice), str(world.partner.customer_id), 8_000, "USD", "A2", "/r"
        )
    )
    assert isinstance(started, Succeeded), started
    first = len(fake.events)
    fake.complete_checkout(started.value.gateway_ref, DECLINE)  # a card refused first
    intent = fake.complete_checkout(started.value.gateway_ref, SUCCEED)
    refunds = [fake.refund(intent["id"], 1_500), fake.refund(intent["id"], 700)]
    dispute = fake.dispute(intent["id"])
    events = [e for e in fake.events[first:] if not e["type"].startswith("payment_method.")]
    roles = {intent["id"]: "payment", dispute["id"]: "dispute"}
    roles.update({refund["id"]: f"refund{n}" for n, refund in enumerate(refunds, 1)})
    return invoice, events, roles


def deliver(world: World, events: list[dict[str, Any]]) -> None:
    with world.app.app_context():  # as a request is
        for event in events:
            body, headers = world.fake.delivery(event)
            receive_webhook(world.gateway, body, headers)


def state(world: World, invoice: int, roles: dict[str, str]) -> dict[str, Any]:
    with world.app.app_context(), get_database(world.app).sessions() as s:
        rows = s.scalars(select(InvoicePayment).where(InvoicePayment.invoice_id == invoice))
        ledger = sorted((p.kind.value, p.amount_minor, roles[p.gateway_reference]) for p in rows)
        disputes = sorted(
            (roles[d.dispute_ref], roles[d.payment_ref], d.amount_minor)
            for d in s.scalars(select(PaymentDispute).where(PaymentDispute.invoice_id == invoice))
        )
        detail = invoice_detail(s, invoice, today=TODAY)
        assert detail is not None
        return {
            "ledger": ledger,
            "disputes": disputes,
            "paid": detail.paid_minor,
            "balance": detail.balance_minor,
            "status": detail.status,
        }


def ordered(world: World) -> dict[str, Any]:
    if not _ORDERED:
        invoice, events, roles = scenario(world)
        deliver(world, events)
        _ORDERED.update(state(world, invoice, roles))
    return _ORDERED


def test_a2_the_ordered_story_is_what_was_expected(world: World) -> None:
    assert ordered(world) == {
        "ledger": [
            ("payment", 8_000, "payment"),
            ("refund", 700, "refund2"),
            ("refund", 1_500, "refund1"),
        ],
        # a chargeback is for what was still paid: 8,000 less the 2,200 refunded
        "disputes": [("dispute", "payment", 5_800)],
        "paid": 5_800,
        "balance": 4_200,
        "status": InvoiceStatus.PARTIALLY_PAID,
    }


@settings(
    max_examples=PERMUTATIONS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(data=st.data())
def test_a2_any_order_of_the_events_ends_where_the_ordered_sequence_does(
    world: World, data: st.DataObject
) -> None:
    expected = ordered(world)
    invoice, events, roles = scenario(world)
    order = data.draw(st.permutations(range(len(events))), label="order")
    repeats = data.draw(st.lists(st.sampled_from(range(len(events))), max_size=4), label="again")
    positions = data.draw(
        st.lists(st.integers(0, len(events)), min_size=len(repeats), max_size=len(repeats)),
        label="where",
    )
    deliveries = [events[i] for i in order]
    for index, position in zip(repeats, positions, strict=True):
        deliveries.insert(position, events[index])
    deliver(world, deliveries)
    assert state(world, invoice, roles) == expected


# -- A8 -------------------------------------------------------------------------------------------


payment = st.tuples(st.just("pay"), st.integers(50, 6_000))
refund = st.tuples(st.just("refund"), st.integers(0, 3), st.integers(1, 100))
# a payment first, then payments and refunds (of some payment, a share of what is left) in any mix
operations = st.tuples(payment, st.lists(st.one_of(payment, refund), max_size=7)).map(
    lambda drawn: [drawn[0], *drawn[1]]
)


@settings(
    max_examples=LEDGER_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(ops=operations, data=st.data())
def test_a8_paid_is_payments_minus_refunds_and_the_status_follows(
    world: World, ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    fake = world.fake
    invoice = make_invoice(world.app, world.partner, TOTAL)
    first = len(fake.events)
    intents: list[dict[str, Any]] = []
    for op in ops:
        if op[0] == "pay":
            intents.append(
                fake.add_succeeded_payment(
                    op[1],
                    invoice_ref=str(invoice),
                    customer_ref=str(world.partner.customer_id),
                )
            )
        elif intents:
            intent = intents[op[1] % len(intents)]
            charge = fake.charges[fake.intents[intent["id"]]["latest_charge"]]
            left = charge["amount"] - charge["amount_refunded"]
            if left > 0:
                fake.refund(intent["id"], max(1, left * op[2] // 100))
    events = fake.events[first:]
    order = data.draw(st.permutations(events), label="order")
    deliver(world, [*order, *data.draw(st.lists(st.sampled_from(events), max_size=3))])

    received = sum(fake.intents[i["id"]]["amount_received"] for i in intents)
    refunded = sum(
        r["amount"]
        for r in fake.refunds.values()
        if r["payment_intent"] in {i["id"] for i in intents}
    )
    with world.app.app_context(), get_database(world.app).sessions() as s:
        detail = invoice_detail(s, invoice, today=TODAY)
        assert detail is not None
        assert detail.paid_minor == received - refunded
        stored = s.get_one(Invoice, invoice)
        assert detail.status == invoice_status(
            InvoiceState.ISSUED, TOTAL, 0, received - refunded, stored.due_on, TODAY
        )
        # the list's SQL derives the same status and balance
        listed = {
            row.invoice.id: row for row in list_invoices(s, today=TODAY, number=stored.number).rows
        }
        assert listed[invoice].status == detail.status
        assert listed[invoice].balance_minor == TOTAL - (received - refunded)


def test_a8_paid_and_status_are_never_stored() -> None:
    columns = {column.name for column in Invoice.__table__.columns}
    assert not columns & {"paid_minor", "balance_minor", "status", "paid", "amount_paid"}
