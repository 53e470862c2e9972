"""The Stripe gateway honours the payment gateway contracts (paying, and saved cards), through
the real SDK against the fake Stripe; payments are finished on the fake's "hosted page"."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from stripe_payments import StripeGateway
from stripe_payments.fake import DECLINE, SUCCEED, FakeStripe

from portal.integrations.payments import PaymentGateway, PaymentSession, SavedCardGateway
from portal.testing.contracts import (
    FinishPayment,
    PaymentGatewayContract,
    SaveCard,
    SavedCardGatewayContract,
    SignWebhook,
)


class TestStripePaymentsContract(PaymentGatewayContract):
    @pytest.fixture
    def adapter(self, gateway: StripeGateway) -> PaymentGateway:
        return gateway

    @pytest.fixture
    def round_trip_amounts(self) -> list[tuple[str, int]]:
        # Stripe's smallest charge is 50 cents: the contract's 1-cent case would be refused
        return [
            ("USD", 50),
            ("USD", 123_456),
            ("EUR", 99_999_999),
            ("JPY", 1_234_567),
            ("KWD", 12_345_670),
        ]

    @pytest.fixture
    def sign_webhook(self, fake: FakeStripe) -> SignWebhook:
        def sign(body: bytes, timestamp: int | None = None) -> Mapping[str, str]:
            return {"Stripe-Signature": fake.signature(body, timestamp=timestamp)}

        return sign

    @pytest.fixture
    def webhook_body(self, fake: FakeStripe) -> bytes:
        intent = fake.add_succeeded_payment(1_050, "eur", invoice_ref="7", customer_ref="3")
        event = next(
            e
            for e in fake.events_of("payment_intent.succeeded")
            if e["data"]["object"]["id"] == intent["id"]
        )
        return json.dumps(event).encode()

    @pytest.fixture
    def finish_payment(self, fake: FakeStripe) -> FinishPayment:
        def finish(session: PaymentSession, succeed: bool) -> None:
            fake.complete_checkout(session.gateway_ref, SUCCEED if succeed else DECLINE)

        return finish


class TestStripeSavedCardsContract(SavedCardGatewayContract):
    @pytest.fixture
    def adapter(self, gateway: StripeGateway) -> SavedCardGateway:
        return gateway

    @pytest.fixture
    def save_card(self, fake: FakeStripe) -> SaveCard:
        def save(session: PaymentSession, behaviour: str) -> None:
            fake.complete_setup(session.gateway_ref, behaviour)

        return save
