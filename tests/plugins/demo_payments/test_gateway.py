"""The demo gateway beyond the contract: the documented webhook signature, its secret and
tolerance, the idempotency conflicts, amounts, its own table and its imports."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from demo_payments import MIGRATIONS
from demo_payments.gateway import (
    DEVELOPMENT_WEBHOOK_SECRET,
    DemoPaymentGateway,
    DemoPaymentSettings,
)
from demo_payments.models import DemoPaymentsBase
from flask import Flask

from portal.core.db import Base, get_database
from portal.integrations.payments import (
    PaymentRequest,
    PaymentSession,
    PaymentStatus,
    SignatureError,
)
from portal.integrations.registry import integrations
from portal.integrations.results import BusinessRejection, Succeeded
from portal.testing.support import private_portal_imports

NOW = 1_800_000_000
BODY = json.dumps({"id": "evt_1", "type": "payment.succeeded", "payment": None}).encode()


def documented_signature(body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The header exactly as docs/plugins.md describes it, computed independently."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body.decode()}".encode(), hashlib.sha256)
    return {"Demo-Signature": f"t={timestamp},v1={mac.hexdigest()}"}


def at(app: Flask, now: float, secret: str = DEVELOPMENT_WEBHOOK_SECRET) -> DemoPaymentGateway:
    """The gateway on the app's table, with its clock stopped at ``now``."""
    return DemoPaymentGateway(
        get_database(app).engine, DemoPaymentSettings(webhook_secret=secret), clock=lambda: now
    )


def test_a_webhook_signed_as_documented_parses(portal_app: Flask) -> None:
    gateway = at(portal_app, NOW)
    event = gateway.parse_webhook(BODY, documented_signature(BODY, DEVELOPMENT_WEBHOOK_SECRET, NOW))
    assert (event.event_id, event.type, event.payment) == ("evt_1", "payment.succeeded", None)


def test_the_signature_header_name_is_case_insensitive(portal_app: Flask) -> None:
    headers = documented_signature(BODY, DEVELOPMENT_WEBHOOK_SECRET, NOW)
    lower = {"demo-signature": headers["Demo-Signature"]}
    assert at(portal_app, NOW).parse_webhook(BODY, lower).event_id == "evt_1"


@pytest.mark.parametrize(("age", "accepted"), [(0, True), (300, True), (301, False), (-301, False)])
def test_signatures_are_valid_for_five_minutes(portal_app: Flask, age: int, accepted: bool) -> None:
    headers = documented_signature(BODY, DEVELOPMENT_WEBHOOK_SECRET, NOW - age)
    gateway = at(portal_app, NOW)
    if accepted:
        assert gateway.parse_webhook(BODY, headers).event_id == "evt_1"
    else:
        with pytest.raises(SignatureError, match="tolerance"):
            gateway.parse_webhook(BODY, headers)


def test_a_rotated_secret_may_sign_beside_the_current_one(portal_app: Flask) -> None:
    old = documented_signature(BODY, "old-secret", NOW)["Demo-Signature"]
    new = documented_signature(BODY, DEVELOPMENT_WEBHOOK_SECRET, NOW)["Demo-Signature"]
    both = {"Demo-Signature": f"{old},v1={new.partition(',v1=')[2]}"}
    assert at(portal_app, NOW).parse_webhook(BODY, both).event_id == "evt_1"


@pytest.mark.parametrize(
    "header",
    ["", "t=abc,v1=00", f"v1={'0' * 64}", f"t={NOW}", f"t={NOW},v1=", f"t={NOW},v2=ab"],
)
def test_malformed_signature_headers_are_refused(portal_app: Flask, header: str) -> None:
    with pytest.raises(SignatureError):
        at(portal_app, NOW).parse_webhook(BODY, {"Demo-Signature": header})


def test_a_signed_body_that_is_not_an_event_is_refused(portal_app: Flask) -> None:
    gateway = at(portal_app, NOW)
    for body in (b"not json", b"[]", b'{"id": "evt_1"}'):
        with pytest.raises(SignatureError, match="not a demo payments event"):
            gateway.parse_webhook(body, documented_signature(body, DEVELOPMENT_WEBHOOK_SECRET, NOW))


@pytest.fixture
def portal_config(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("PORTAL_DEMO_PAYMENTS_WEBHOOK_SECRET", "whsec-from-the-environment")
    return {}


def test_the_webhook_secret_comes_from_the_environment(gateway: DemoPaymentGateway) -> None:
    assert gateway.settings.webhook_secret == "whsec-from-the-environment"
    now = int(time.time())
    with pytest.raises(SignatureError, match="does not match"):
        gateway.parse_webhook(BODY, documented_signature(BODY, DEVELOPMENT_WEBHOOK_SECRET, now))
    signed = documented_signature(BODY, "whsec-from-the-environment", now)
    assert gateway.parse_webhook(BODY, signed).event_id == "evt_1"


def test_the_webhook_for_a_payment_carries_its_true_state(
    gateway: DemoPaymentGateway, start: Callable[..., PaymentSession]
) -> None:
    session = start(99_999, "JPY")
    gateway.pay_with_card(session.gateway_ref, "4000 0000 0000 0002")
    body, headers = gateway.webhook_for(session.gateway_ref)
    event = gateway.parse_webhook(body, headers)
    assert event.type == "payment.failed"
    assert event.payment is not None
    assert event.payment.status == PaymentStatus.FAILED
    assert (event.payment.amount_minor, event.payment.currency) == (99_999, "JPY")
    assert event.payment.failure_reason == "Your card was declined."


def test_one_idempotency_key_never_opens_a_second_payment(
    gateway: DemoPaymentGateway, make_request: Callable[..., PaymentRequest]
) -> None:
    request = make_request(5_00)
    first = gateway.start_payment(request)
    assert isinstance(first, Succeeded)
    assert gateway.start_payment(request) == first
    other = make_request(6_00, idempotency_key=request.idempotency_key)
    reused = gateway.start_payment(other)
    assert isinstance(reused, BusinessRejection)
    assert reused.code == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        (0, "USD", "demo.invalid_amount"),
        (-1, "USD", "demo.invalid_amount"),
        (12.5, "USD", "demo.invalid_amount"),
        (True, "USD", "demo.invalid_amount"),
        (10**13, "USD", "demo.invalid_amount"),
        (100, "usd", "demo.invalid_currency"),
        (100, "US", "demo.invalid_currency"),
    ],
)
def test_amounts_are_positive_integer_minor_units_of_an_iso_currency(
    gateway: DemoPaymentGateway,
    make_request: Callable[..., PaymentRequest],
    amount: object,
    currency: str,
    code: str,
) -> None:
    result = gateway.start_payment(make_request(amount, currency))
    assert isinstance(result, BusinessRejection) and result.code == code
    assert result.reason


@pytest.mark.parametrize(
    ("return_url", "accepted"),
    [
        ("https://portal.test/invoices/7", True),
        ("/invoices/7?tab=pay", True),
        ("javascript:alert(1)", False),
        ("data:text/html,hi", False),
        ("//evil.example/x", False),
        ("invoices/7", False),
        ("", False),
    ],
)
def test_the_return_url_is_an_address_or_a_portal_path(
    gateway: DemoPaymentGateway,
    make_request: Callable[..., PaymentRequest],
    return_url: str,
    accepted: bool,
) -> None:
    result = gateway.start_payment(make_request(return_url=return_url))
    assert isinstance(result, Succeeded) is accepted, result


def test_large_amounts_survive_the_round_trip(
    gateway: DemoPaymentGateway, start: Callable[..., PaymentSession]
) -> None:
    session = start(999_999_999_999, "KWD")
    result = gateway.get_payment(session.gateway_ref)
    assert isinstance(result, Succeeded)
    assert result.value.amount_minor == 999_999_999_999
    assert type(result.value.amount_minor) is int


def test_its_table_is_its_own_and_matches_its_migration(portal_app: Flask) -> None:
    assert set(DemoPaymentsBase.metadata.tables) == {
        "demo_payments_payment",
        "demo_payments_customer",
        "demo_payments_card",
        "demo_payments_setup",
    }
    assert "demo_payments_payment" not in Base.metadata.tables
    assert str(MIGRATIONS) in integrations(portal_app).migration_locations
    with get_database(portal_app).engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _parent: (
                    kind != "table" or str(name).startswith("demo_payments_")
                ),
            },
        )
        assert compare_metadata(context, DemoPaymentsBase.metadata) == []


def test_it_imports_only_the_public_parts_of_the_portal() -> None:
    assert private_portal_imports(Path(MIGRATIONS).parent) == []
