"""Events survive the outbox: JSON in the item's payload and back, exactly (Decimal as its
string, dates as ISO days, None kept), for every event type a plugin can subscribe to."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.integrations.events import (
    EVENT_TYPES,
    HOOKS,
    CreditNoteIssued,
    CustomerRef,
    DocumentLine,
    InvoiceIssued,
    LicenceChangeFinished,
    PartnerRef,
    PaymentRecorded,
    ProductRef,
    from_payload,
    to_payload,
)
from portal.plugins import SPEC_MODULES

PARTNER = PartnerRef(id=1, slug="alpha", name="Alpha Cloud")
CUSTOMER = CustomerRef(id=2, name="Contoso Ltd", tenant_id=None)
LINE = DocumentLine(
    position=1,
    kind="addition",
    description="Microsoft 365 E3 (12/30 days)",
    period_start=date(2026, 11, 1),
    period_end=date(2026, 12, 1),
    quantity=Decimal("2"),
    unit_price=Decimal("33.333333333"),
    amount_minor=1_333,
    subscription_id=None,
)
EXAMPLES: list[Any] = [
    InvoiceIssued(
        invoice_id=3,
        number="INV-000001",
        partner=PARTNER,
        customer=CUSTOMER,
        issued_on=date(2026, 12, 1),
        due_on=date(2026, 12, 31),
        period_start=date(2026, 12, 1),
        period_end=date(2027, 1, 1),
        currency="EUR",
        lines=(LINE, LINE),
        subtotal_minor=2_666,
        tax_minor=533,
        total_minor=3_199,
    ),
    CreditNoteIssued(
        credit_note_id=4,
        number="CN-000001",
        kind="void",
        reason="Ordered by mistake",
        invoice_id=3,
        invoice_number="INV-000001",
        partner=PARTNER,
        customer=CUSTOMER,
        issued_on=date(2026, 12, 2),
        currency="EUR",
        lines=(LINE,),
        subtotal_minor=1_333,
        tax_minor=0,
        total_minor=1_333,
    ),
    PaymentRecorded(
        payment_id=5,
        kind="refund",
        invoice_id=3,
        invoice_number="INV-000001",
        partner=PARTNER,
        customer=CUSTOMER,
        amount_minor=1,
        currency="JPY",
        gateway_key="stripe",
        gateway_reference="re_1",
        received_at=datetime(2026, 12, 3, 9, 30, 1, 250, tzinfo=UTC),
    ),
    LicenceChangeFinished(
        change_id=6,
        subscription_id=7,
        subscription_ref="",
        partner=PARTNER,
        customer=CustomerRef(id=2, name="Contoso", tenant_id="9b6f…"),
        product=ProductRef(id=8, name="Microsoft 365 E3", offer_id="CFQ7TTC0LFLX:0001"),
        state="rejected",
        quantity_from=10,
        quantity_to=5,
        reason="Quantity below the minimum",
        finished_at=None,
    ),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda event: type(event).__name__)
def test_an_event_comes_back_from_its_stored_payload_unchanged(event: Any) -> None:
    stored = json.loads(json.dumps(to_payload(event)))  # as the outbox's JSON column keeps it
    assert from_payload(type(event), stored) == event


def test_every_event_type_has_a_hook_with_a_specification() -> None:
    assert {type(event) for event in EXAMPLES} == set(HOOKS)
    specified = {name for module in SPEC_MODULES for name in dir(module)}
    assert set(EVENT_TYPES) <= specified
    assert set(EVENT_TYPES) == set(HOOKS.values())


@given(st.decimals(allow_nan=False, allow_infinity=False, places=9))
def test_quantities_and_prices_keep_every_digit(value: Decimal) -> None:
    line = DocumentLine(1, "usage", "", date(2026, 1, 1), date(2026, 2, 1), value, value, 0, 1)
    back = from_payload(DocumentLine, json.loads(json.dumps(to_payload(line))))
    assert (str(back.quantity), str(back.unit_price)) == (str(value), str(value))
