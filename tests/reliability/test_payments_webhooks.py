"""A1, A3 and A4 of the reliability notes, against the portal under gunicorn (3 worker
processes) on PostgreSQL, with deliveries signed by the fake Stripe exactly as Stripe signs them.

- A1 duplicate-delivery storm: 20 payments, each announced 25 times at once by identical signed
  deliveries of ``payment_intent.succeeded`` plus ``checkout.session.completed`` and
  ``charge.succeeded``: exactly one ledger row and one receipt per payment, no 5xx.
- A3 signature and replay: 1,000 mutated deliveries (bit flips, wrong secret, missing or
  malformed header, timestamps ±301 s, a duplicated ``t=``, …) are all answered 400 and write
  nothing; a valid delivery replayed within 300 s is a no-op; during a secret roll (two ``v1``)
  the delivery is accepted.
- A4 return page vs webhook: 100 payments, each recorded at the same moment by the webhook (in
  gunicorn) and by the return page's call (here, another process): one ledger row, one receipt.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from sqlalchemy import select
from stripe_payments.fake import SUCCEED, signature_header

from portal.core.db import get_database
from portal.features.billing.models import InvoicePayment, PaymentKind
from portal.features.payments.services.events import record_payment_outcome
from portal.integrations.payments import PaymentRequest
from portal.integrations.results import Succeeded
from tests.plugins.stripe_payments.support import make_invoice
from tests.reliability import payments_support as support
from tests.reliability.payments_support import WEBHOOK, WEBHOOK_SECRET, World, event_of

world = support.world  # the module's fixtures
served = support.served

STORM_PAYMENTS = 20
STORM_COPIES = 25
MUTATIONS = 1_000
RACES = 100


def checkout(world: World, amount: int) -> tuple[int, str, str]:
    """An invoice paid on the fake's Checkout page: (invoice id, session id, intent id)."""
    invoice = make_invoice(world.app, world.partner)
    started = world.gateway.start_payment(
        PaymentRequest(
            idempotency_key=f"pay-{invoice}-1",
            invoice_ref=str(invoice),
            customer_ref=str(world.partner.customer_id),
            amount_minor=amount,
            currency="USD",
            description=f"Invoice {invoice}",
            return_url="https://pay.portal.test/invoices/return",
        )
    )
    assert isinstance(started, Succeeded), started
    intent = world.fake.complete_checkout(started.value.gateway_ref, SUCCEED)
    return invoice, started.value.gateway_ref, intent["id"]


def ledger_by_invoice(world: World, invoices: list[int]) -> Counter[int]:
    with get_database(world.app).sessions() as s:
        rows = s.scalars(
            select(InvoicePayment).where(
                InvoicePayment.invoice_id.in_(invoices), InvoicePayment.kind == PaymentKind.PAYMENT
            )
        ).all()
        return Counter(row.invoice_id for row in rows)


def send(base: str, body: bytes, headers: dict[str, str]) -> int:
    return requests.post(base + WEBHOOK, data=body, headers=headers, timeout=30).status_code


# -- A1 ------------------------------------------------------------------------------------------


def test_a1_a_storm_of_identical_deliveries_records_each_payment_once(
    world: World, served: str
) -> None:
    paid = [checkout(world, 1_000 + n) for n in range(STORM_PAYMENTS)]
    deliveries: list[tuple[bytes, dict[str, str]]] = []
    for _, session, intent in paid:
        succeeded = world.fake.delivery(event_of(world.fake, "payment_intent.succeeded", intent))
        deliveries += [succeeded] * STORM_COPIES  # byte-identical, same signature
        for type_, ref in (("checkout.session.completed", session), ("charge.succeeded", None)):
            found = (
                event_of(world.fake, type_, ref)
                if ref
                else next(
                    e
                    for e in world.fake.events_of(type_)
                    if e["data"]["object"]["payment_intent"] == intent
                )
            )
            deliveries += [world.fake.delivery(found)] * 5
    random.Random(1).shuffle(deliveries)
    barrier = threading.Barrier(32)

    def deliver(delivery: tuple[bytes, dict[str, str]]) -> int:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=0.5)  # the first wave leaves together
        return send(served, *delivery)

    with ThreadPoolExecutor(32) as pool:
        statuses = Counter(pool.map(deliver, deliveries))
    assert statuses == {200: len(deliveries)}, statuses
    invoices = [invoice for invoice, _, _ in paid]
    assert ledger_by_invoice(world, invoices) == Counter(dict.fromkeys(invoices, 1))
    with get_database(world.app).sessions() as s:
        amounts = {
            p.gateway_reference: p.amount_minor
            for p in s.scalars(
                select(InvoicePayment).where(InvoicePayment.invoice_id.in_(invoices))
            )
        }
    assert amounts == {intent: 1_000 + n for n, (_, _, intent) in enumerate(paid)}
    assert world.receipts(invoices) == STORM_PAYMENTS


# -- A3 ------------------------------------------------------------------------------------------


def _sign(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def mutations(
    body: bytes, rng: random.Random, count: int
) -> list[tuple[str, bytes, dict[str, str]]]:
    """``count`` deliveries of ``body`` that must all be refused, of every kind."""
    now = int(time.time())
    good = _sign(body, WEBHOOK_SECRET, now)

    def header(value: str | None) -> dict[str, str]:
        return {"Content-Type": "application/json"} | (
            {} if value is None else {"Stripe-Signature": value}
        )

    def flipped() -> tuple[bytes, dict[str, str]]:
        data = bytearray(body)
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        return bytes(data), header(f"t={now},v1={good}")

    def hex_flip() -> tuple[bytes, dict[str, str]]:
        sig = list(good)
        i = rng.randrange(len(sig))
        sig[i] = "0123456789abcdef"[("0123456789abcdef".index(sig[i]) + rng.randrange(1, 16)) % 16]
        return body, header(f"t={now},v1={''.join(sig)}")

    makers = {
        "bit-flipped body": flipped,
        "flipped signature": hex_flip,
        "wrong secret": lambda: (
            body,
            header(f"t={now},v1={_sign(body, 'whsec_' + secrets_hex(rng), now)}"),
        ),
        "missing header": lambda: (body, header(None)),
        "empty header": lambda: (body, header("")),
        "garbage header": lambda: (body, header(secrets_hex(rng) + "=" + secrets_hex(rng))),
        "no timestamp": lambda: (body, header(f"v1={good}")),
        "no v1": lambda: (body, header(f"t={now}")),
        "v0 only": lambda: (body, header(f"t={now},v0={good}")),
        "301 s old": lambda: (
            body,
            header(f"t={now - 301},v1={_sign(body, WEBHOOK_SECRET, now - 301)}"),
        ),
        "an hour old": lambda: (
            body,
            header(f"t={now - 3600},v1={_sign(body, WEBHOOK_SECRET, now - 3600)}"),
        ),
        "301 s ahead": lambda: (
            body,
            header(f"t={now + 301},v1={_sign(body, WEBHOOK_SECRET, now + 301)}"),
        ),
        "duplicated t=": lambda: (
            body,
            header(f"t={now},t={now - 1000},v1={good}"),
        ),
        "signed for another body": lambda: (
            body,
            header(f"t={now},v1={_sign(body + b' ', WEBHOOK_SECRET, now)}"),
        ),
        "truncated signature": lambda: (body, header(f"t={now},v1={good[: rng.randrange(64)]}")),
        "upper-case signature": lambda: (body, header(f"t={now},v1={good.upper()}")),
        "timestamp not a number": lambda: (body, header(f"t=now,v1={good}")),
        "truncated body": lambda: (body[: rng.randrange(len(body))], header(f"t={now},v1={good}")),
        "body with whitespace": lambda: (body + b"\n", header(f"t={now},v1={good}")),
        "other timestamp": lambda: (body, header(f"t={now - 1},v1={good}")),
    }
    names = sorted(makers)
    return [(name, *makers[name]()) for name in (names[i % len(names)] for i in range(count))]


def secrets_hex(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def test_a3_a_thousand_spoiled_deliveries_are_refused_and_change_nothing(
    world: World, served: str
) -> None:
    _, _, intent = checkout(world, 2_000)
    body = json.dumps(event_of(world.fake, "payment_intent.succeeded", intent)).encode()
    cases = mutations(body, random.Random(3), MUTATIONS)
    before = world.row_counts()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda case: (case[0], send(served, case[1], case[2])), cases))
    wrong = Counter(name for name, status in answers if status != 400)
    assert not wrong, f"accepted (or not 400): {wrong}"
    assert len(answers) >= 1_000
    assert world.row_counts() == before, "a refused delivery wrote something"


def test_a3_a_valid_delivery_replayed_within_300_s_is_a_no_op(world: World, served: str) -> None:
    invoice, _, intent = checkout(world, 3_000)
    body = json.dumps(event_of(world.fake, "payment_intent.succeeded", intent)).encode()
    headers = {"Stripe-Signature": signature_header(body, WEBHOOK_SECRET, int(time.time()) - 200)}
    assert send(served, body, headers) == 200
    after_first = world.row_counts()
    for _ in range(3):  # the same bytes and signature again, still inside the tolerance
        assert send(served, body, headers) == 200
    assert world.row_counts() == after_first
    assert ledger_by_invoice(world, [invoice]) == Counter({invoice: 1})


def test_a3_during_a_secret_roll_either_v1_is_accepted(world: World, served: str) -> None:
    invoice, _, intent = checkout(world, 3_500)
    body = json.dumps(event_of(world.fake, "payment_intent.succeeded", intent)).encode()
    now = int(time.time())
    neither = f"t={now},v1={_sign(body, 'whsec_old', now)},v1={_sign(body, 'whsec_x', now)}"
    assert send(served, body, {"Stripe-Signature": neither}) == 400
    rolled = f"t={now},v1={_sign(body, 'whsec_old', now)},v1={_sign(body, WEBHOOK_SECRET, now)}"
    assert send(served, body, {"Stripe-Signature": rolled}) == 200
    assert ledger_by_invoice(world, [invoice]) == Counter({invoice: 1})


# -- A4 ------------------------------------------------------------------------------------------


def test_a4_the_return_page_and_the_webhook_record_one_payment(world: World, served: str) -> None:
    trials = [checkout(world, 4_000 + n) for n in range(RACES)]

    def race(trial: tuple[int, str, str]) -> tuple[int, bool]:
        invoice, session, intent = trial
        body, headers = world.fake.delivery(
            event_of(world.fake, "payment_intent.succeeded", intent)
        )
        start = threading.Barrier(2)
        outcome: dict[str, Any] = {}

        def webhook() -> None:
            start.wait(timeout=10)
            outcome["status"] = send(served, body, headers)

        def return_page() -> None:
            read = world.gateway.get_payment(session)  # the true state, asked of Stripe
            assert isinstance(read, Succeeded)
            start.wait(timeout=10)
            with world.app.app_context(), get_database(world.app).sessions() as s:
                recording = record_payment_outcome(
                    s, "stripe", read.value, source="return", invoice_id=invoice
                )
                s.commit()
            outcome["recorded"] = recording.recorded
            outcome["payment_id"] = recording.payment_id

        threads = [threading.Thread(target=webhook), threading.Thread(target=return_page)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert outcome["payment_id"] is not None, "the return page sees the payment"
        return outcome["status"], outcome["recorded"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(race, trials))
    assert Counter(status for status, _ in results) == {200: RACES}
    invoices = [invoice for invoice, _, _ in trials]
    assert ledger_by_invoice(world, invoices) == Counter(dict.fromkeys(invoices, 1))
    assert world.receipts(invoices) == RACES
    won = Counter(recorded for _, recorded in results)
    assert won[True] + won[False] == RACES  # who won varies; the total never does
