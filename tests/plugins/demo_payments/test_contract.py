"""The demo payment gateway honours the payment gateway contract every adapter must, and the
saved-card contract; payments and card setups are finished through its own card forms, as a
customer would."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from demo_payments.gateway import (
    CARD_FOR_BEHAVIOUR,
    DECLINED_CARD,
    SUCCEEDING_CARD,
    DemoPaymentGateway,
)

from portal.integrations.payments import PaymentGateway, PaymentSession, SavedCardGateway
from portal.testing.contracts import (
    FinishPayment,
    PaymentGatewayContract,
    SaveCard,
    SavedCardGatewayContract,
    SignWebhook,
)
from portal.testing.support import PortalClient


class TestDemoPaymentsContract(PaymentGatewayContract):
    @pytest.fixture
    def adapter(self, gateway: DemoPaymentGateway) -> PaymentGateway:
        return gateway

    @pytest.fixture
    def sign_webhook(self, gateway: DemoPaymentGateway) -> SignWebhook:
        def sign(body: bytes, timestamp: int | None = None) -> Mapping[str, str]:
            return gateway.sign(body, timestamp)

        return sign

    @pytest.fixture
    def webhook_body(self) -> bytes:
        event = {
            "id": "evt_0123456789",
            "type": "payment.succeeded",
            "payment": {
                "gateway_ref": "dp_example",
                "status": "succeeded",
                "amount_minor": 1050,
                "currency": "EUR",
                "failure_reason": None,
            },
        }
        return json.dumps(event).encode()

    @pytest.fixture
    def finish_payment(self, portal_client: PortalClient) -> FinishPayment:
        def finish(session: PaymentSession, succeed: bool) -> None:
            card = SUCCEEDING_CARD if succeed else DECLINED_CARD
            response = portal_client.post_form(session.redirect_url, {"card_number": card})
            assert response.status_code == 302, response.status_code

        return finish


class TestDemoPaymentsSavedCardContract(SavedCardGatewayContract):
    @pytest.fixture
    def adapter(self, gateway: DemoPaymentGateway) -> SavedCardGateway:
        return gateway

    @pytest.fixture
    def save_card(self, portal_client: PortalClient, gateway: DemoPaymentGateway) -> SaveCard:
        def save(session: PaymentSession, behaviour: str) -> None:
            card = CARD_FOR_BEHAVIOUR[behaviour]
            response = portal_client.post_form(session.redirect_url, {"card_number": card})
            assert response.status_code == 302, response.status_code
            location = response.headers["Location"]
            if location.endswith("/authenticate"):  # the bank's extra step, approved
                response = portal_client.post_form(location, {"approve": "Approve"})
                assert response.status_code == 302, response.status_code

        return save
