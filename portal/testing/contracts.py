"""Contract test suites, one per kind of adapter.

Subclass the suite in a test module (the subclass's name must start with ``Test``) and provide
its fixtures; every ``test_contract_*`` method then runs against your adapter::

    from portal.testing.contracts import ProviderContract

    class TestAcmeProviderContract(ProviderContract):
        @pytest.fixture
        def adapter(self, acme_fake): # point the real client at a fake server
            return AcmeProvider(base_url=acme_fake.url, token="test")

Each suite checks what the core relies on: idempotency (a repeated request has one effect),
amounts as integer minor units, and that every outcome is a
:class:`~portal.integrations.results.Succeeded`, a
:class:`~portal.integrations.results.TechnicalFailure` or a
:class:`~portal.integrations.results.BusinessRejection`, never an exception.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar, cast

import pytest

from portal.integrations.accounting import (
    AccountingInvoice,
    AccountingLine,
    AccountingPayment,
    AccountingSystem,
)
from portal.integrations.notifications import Notification, Notifier
from portal.integrations.payments import (
    AUTHENTICATION_REQUIRED,
    CardSetupRequest,
    CustomerProfile,
    EventKind,
    PaymentGateway,
    PaymentOutcome,
    PaymentRequest,
    PaymentSession,
    PaymentStatus,
    SavedCard,
    SavedCardCharge,
    SavedCardGateway,
    SignatureError,
    WebhookEvent,
)
from portal.integrations.providers import (
    AgreementAttestation,
    AgreementConfirmation,
    AgreementTemplate,
    NewSubscription,
    ProviderAdapter,
    ProviderSubscription,
    QuantityChange,
)
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure

T = TypeVar("T")
RESULT_TYPES = (Succeeded, TechnicalFailure, BusinessRejection)


def unique(prefix: str) -> str:
    """A fresh id for a request, key or reference."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def succeeded(result: object, what: str) -> Succeeded[Any]:
    """The result, which the contract needs to be a success here."""
    if not isinstance(result, Succeeded):
        pytest.fail(
            f"{what}: the contract needs this call to succeed, got {result!r}. Set the adapter "
            "(or its fake server) up so that ordinary requests succeed."
        )
    return result


def classified(call: Callable[[], T], what: str) -> T:
    """Run ``call``; fail when it raises or returns something other than the three results."""
    try:
        result = call()
    except Exception as error:
        pytest.fail(
            f"{what} raised {error!r}; an adapter returns TechnicalFailure or "
            "BusinessRejection instead of raising"
        )
    assert isinstance(result, RESULT_TYPES), f"{what} returned {result!r}, not a Result"
    if isinstance(result, TechnicalFailure):
        assert result.message.strip(), f"{what}: a technical failure needs a message"
        assert result.retry_after is None or result.retry_after >= timedelta(0)
    if isinstance(result, BusinessRejection):
        assert result.reason.strip(), f"{what}: a business rejection needs a reason"
    return result


def _check_identity(adapter: object, protocol: type) -> None:
    assert isinstance(adapter, protocol), f"{adapter!r} does not implement {protocol.__name__}"
    key = getattr(adapter, "key", "")
    assert isinstance(key, str) and key.strip(), "an adapter needs a non-empty string key"
    name = getattr(adapter, "display_name", "")
    assert isinstance(name, str) and name.strip(), "an adapter needs a display name"


# -- providers ---------------------------------------------------------------------------------


class ProviderContract:
    """The contract of a :class:`~portal.integrations.providers.ProviderAdapter`.

    Fixtures to provide: ``adapter``. Fixtures you may override: ``customer_tenant_id`` and
    ``subscription_ref`` (a subscription the adapter may change; by default fresh ids),
    ``quantities`` (two different valid quantities), ``rejected_quantity`` (a quantity the
    provider refuses, by default -1) and ``offer_id`` (an offer the provider sells). Ordinary
    requests must succeed (no random failures).
    """

    @pytest.fixture
    def adapter(self) -> ProviderAdapter:
        raise NotImplementedError("subclass ProviderContract and provide an `adapter` fixture")

    @pytest.fixture
    def customer_tenant_id(self) -> str:
        return str(uuid.uuid4())

    @pytest.fixture
    def subscription_ref(self) -> str:
        return unique("contract-subscription")

    @pytest.fixture
    def quantities(self) -> tuple[int, int]:
        return (3, 7)

    @pytest.fixture
    def rejected_quantity(self) -> int:
        return -1

    @pytest.fixture
    def offer_id(self) -> str:
        return "CONTRACT-OFFER"

    def test_contract_adapter_implements_the_protocol(self, adapter: ProviderAdapter) -> None:
        _check_identity(adapter, ProviderAdapter)

    def test_contract_same_request_twice_has_one_effect_and_equal_results(
        self,
        adapter: ProviderAdapter,
        customer_tenant_id: str,
        subscription_ref: str,
        quantities: tuple[int, int],
    ) -> None:
        first, second = quantities
        change = QuantityChange(unique("request"), customer_tenant_id, subscription_ref, first)
        result = succeeded(adapter.set_quantity(change), "set_quantity")
        assert adapter.set_quantity(change) == result, "a repeated request must answer the same"
        assert result.value.quantity == first
        later = QuantityChange(unique("request"), customer_tenant_id, subscription_ref, second)
        succeeded(adapter.set_quantity(later), "set_quantity")
        # delivering the first request again (a retry after a lost answer) must not undo the
        # later change: it was applied once, already
        replay = classified(lambda: adapter.set_quantity(change), "set_quantity (repeat)")
        assert isinstance(replay, Succeeded), f"a repeated request must not fail: {replay!r}"
        now = succeeded(adapter.get_subscription(customer_tenant_id, subscription_ref), "read")
        assert now.value.quantity == second, "a repeated request was applied a second time"

    def test_contract_target_quantity_is_absolute(
        self,
        adapter: ProviderAdapter,
        customer_tenant_id: str,
        subscription_ref: str,
        quantities: tuple[int, int],
    ) -> None:
        first, second = quantities
        for target in (first, first, second, first):
            change = QuantityChange(unique("request"), customer_tenant_id, subscription_ref, target)
            result = succeeded(adapter.set_quantity(change), "set_quantity")
            assert result.value.quantity == target, "quantities are absolute, never added"
        read = succeeded(adapter.get_subscription(customer_tenant_id, subscription_ref), "read")
        assert read.value.quantity == first

    def test_contract_read_back_after_set(
        self,
        adapter: ProviderAdapter,
        customer_tenant_id: str,
        subscription_ref: str,
        quantities: tuple[int, int],
    ) -> None:
        target = quantities[1]
        change = QuantityChange(unique("request"), customer_tenant_id, subscription_ref, target)
        written = succeeded(adapter.set_quantity(change), "set_quantity")
        read = succeeded(adapter.get_subscription(customer_tenant_id, subscription_ref), "read")
        assert isinstance(read.value, ProviderSubscription)
        assert read.value.subscription_ref == subscription_ref
        assert read.value.quantity == target
        assert read.value == written.value

    def test_contract_business_rejection_has_a_reason_and_is_stable(
        self,
        adapter: ProviderAdapter,
        customer_tenant_id: str,
        subscription_ref: str,
        rejected_quantity: int,
    ) -> None:
        change = QuantityChange(
            unique("request"), customer_tenant_id, subscription_ref, rejected_quantity
        )
        result = classified(lambda: adapter.set_quantity(change), "set_quantity")
        assert isinstance(result, BusinessRejection), f"expected a rejection, got {result!r}"
        assert result.reason.strip()
        assert adapter.set_quantity(change) == result, "a repeated request must answer the same"

    def test_contract_unknown_subscription_is_a_rejection(
        self, adapter: ProviderAdapter, customer_tenant_id: str
    ) -> None:
        ref = unique("no-such-subscription")
        result = classified(lambda: adapter.get_subscription(customer_tenant_id, ref), "read")
        assert isinstance(result, BusinessRejection), f"expected a rejection, got {result!r}"

    def test_contract_results_are_classified_never_raised(
        self,
        adapter: ProviderAdapter,
        customer_tenant_id: str,
        subscription_ref: str,
        quantities: tuple[int, int],
        rejected_quantity: int,
    ) -> None:
        for quantity in (quantities[0], rejected_quantity, 0, 10**9):
            change = QuantityChange(
                unique("request"), customer_tenant_id, subscription_ref, quantity
            )
            result = classified(partial(adapter.set_quantity, change), f"set {quantity}")
            if isinstance(result, Succeeded):
                assert isinstance(result.value, ProviderSubscription)
        classified(lambda: adapter.get_subscription(customer_tenant_id, subscription_ref), "read")

    def test_contract_purchase_is_idempotent_by_request_id(
        self,
        adapter: ProviderAdapter,
        customer_tenant_id: str,
        offer_id: str,
        quantities: tuple[int, int],
    ) -> None:
        purchase = NewSubscription(
            unique("purchase"), customer_tenant_id, offer_id, quantities[0], "P1M", "monthly"
        )
        bought = succeeded(adapter.create_subscription(purchase), "create_subscription")
        assert bought.value.subscription_ref.strip(), "a new subscription needs a reference"
        assert bought.value.quantity == quantities[0]
        again = succeeded(adapter.create_subscription(purchase), "create_subscription (repeat)")
        assert again.value.subscription_ref == bought.value.subscription_ref, (
            "a repeated purchase request bought a second subscription"
        )
        ref = bought.value.subscription_ref
        read = succeeded(adapter.get_subscription(customer_tenant_id, ref), "read")
        assert read.value.quantity == quantities[0]
        change = QuantityChange(unique("request"), customer_tenant_id, ref, quantities[1])
        changed = succeeded(adapter.set_quantity(change), "set_quantity after a purchase")
        assert changed.value.quantity == quantities[1]

    def test_contract_a_purchase_is_listed_and_its_customer_found(
        self,
        adapter: ProviderAdapter,
        customer_tenant_id: str,
        offer_id: str,
        quantities: tuple[int, int],
    ) -> None:
        purchase = NewSubscription(
            unique("purchase"), customer_tenant_id, offer_id, quantities[0], "P1M", "monthly"
        )
        ref = succeeded(adapter.create_subscription(purchase), "buy").value.subscription_ref
        listed = succeeded(adapter.list_subscriptions(customer_tenant_id), "list_subscriptions")
        mine = [s for s in listed.value if s.subscription_ref == ref]
        assert len(mine) == 1, "list_subscriptions must list a subscription bought, once"
        assert (mine[0].offer_id, mine[0].quantity) == (offer_id, quantities[0])
        found = succeeded(adapter.find_customers(customer_tenant_id), "find_customers")
        assert [c.tenant_id for c in found.value] == [customer_tenant_id.lower()], (
            "find_customers must find a customer by its tenant id, exactly"
        )

    def test_contract_purchase_of_no_seats_is_a_rejection(
        self, adapter: ProviderAdapter, customer_tenant_id: str, offer_id: str
    ) -> None:
        purchase = NewSubscription(
            unique("purchase"), customer_tenant_id, offer_id, 0, "P1M", "monthly"
        )
        result = classified(lambda: adapter.create_subscription(purchase), "create_subscription")
        assert isinstance(result, BusinessRejection), f"expected a rejection, got {result!r}"

    def test_contract_agreement_template_has_an_id_and_a_link(
        self, adapter: ProviderAdapter
    ) -> None:
        template = succeeded(adapter.get_agreement_template(), "get_agreement_template")
        assert isinstance(template.value, AgreementTemplate)
        assert template.value.template_id.strip()
        assert template.value.link.startswith("https://")

    def test_contract_confirming_an_acceptance_twice_succeeds(
        self, adapter: ProviderAdapter, customer_tenant_id: str
    ) -> None:
        template = succeeded(adapter.get_agreement_template(), "get_agreement_template")
        attestation = AgreementAttestation(
            request_id=unique("agreement"),
            customer_tenant_id=customer_tenant_id,
            template_id=template.value.template_id,
            first_name="Ada",
            last_name="Lovelace",
            email="ada@contract.example",
            phone="+1 555 0100",
            accepted_at=datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
        )
        first = succeeded(adapter.confirm_agreement(attestation), "confirm_agreement")
        assert isinstance(first.value, AgreementConfirmation)
        assert first.value.template_id == template.value.template_id
        again = classified(lambda: adapter.confirm_agreement(attestation), "confirm (repeat)")
        assert isinstance(again, Succeeded), (
            f"confirming the same acceptance again must succeed (it already exists): {again!r}"
        )


# -- payment gateways --------------------------------------------------------------------------


class SignWebhook(Protocol):
    """Headers your gateway would send with ``body``, signed at ``timestamp`` (default: now)."""

    def __call__(self, body: bytes, timestamp: int | None = None) -> Mapping[str, str]: ...


class FinishPayment(Protocol):
    """Drive a started payment to success (``succeed=True``) or failure, as the customer would."""

    def __call__(self, session: PaymentSession, succeed: bool) -> None: ...


class PaymentGatewayContract:
    """The contract of a :class:`~portal.integrations.payments.PaymentGateway`.

    Fixtures to provide: ``adapter``; ``sign_webhook(body, timestamp=None) -> headers``;
    ``webhook_body`` (the bytes of a valid event of your gateway); ``finish_payment(session,
    succeed)`` (drives a started payment to a final state: through your fake server, or your
    own test pages). Fixtures you may override: ``round_trip_amounts`` (``(currency,
    amount_minor)`` pairs) and ``return_url``.
    """

    @pytest.fixture
    def adapter(self) -> PaymentGateway:
        raise NotImplementedError(
            "subclass PaymentGatewayContract and provide an `adapter` fixture"
        )

    @pytest.fixture
    def sign_webhook(self) -> SignWebhook:
        raise NotImplementedError("provide a `sign_webhook(body, timestamp=None)` fixture")

    @pytest.fixture
    def webhook_body(self) -> bytes:
        raise NotImplementedError("provide a `webhook_body` fixture: a valid event's bytes")

    @pytest.fixture
    def finish_payment(self) -> FinishPayment:
        raise NotImplementedError("provide a `finish_payment(session, succeed)` fixture")

    @pytest.fixture
    def return_url(self) -> str:
        return "https://portal.test/invoices/1?paid=1"

    @pytest.fixture
    def round_trip_amounts(self) -> list[tuple[str, int]]:
        # minor units of currencies with 2, 0 and 3 decimals, small and large
        return [
            ("USD", 1),
            ("USD", 123_456),
            ("EUR", 99_999_999),
            ("JPY", 1_234_567),
            ("KWD", 12_345_678),
        ]

    @pytest.fixture
    def make_request(self, return_url: str) -> Callable[..., PaymentRequest]:
        def make(amount_minor: int = 12_34, currency: str = "USD", **fields: Any) -> PaymentRequest:
            values: dict[str, Any] = {
                "idempotency_key": unique("payment"),
                "invoice_ref": unique("invoice"),
                "customer_ref": unique("customer"),
                "amount_minor": amount_minor,
                "currency": currency,
                "description": "Contract test invoice",
                "return_url": return_url,
            }
            values.update(fields)
            return PaymentRequest(**values)

        return make

    def test_contract_adapter_implements_the_protocol(self, adapter: PaymentGateway) -> None:
        _check_identity(adapter, PaymentGateway)

    def test_contract_start_payment_is_idempotent_by_key(
        self, adapter: PaymentGateway, make_request: Callable[..., PaymentRequest]
    ) -> None:
        request = make_request()
        first = succeeded(adapter.start_payment(request), "start_payment")
        assert isinstance(first.value, PaymentSession)
        assert first.value.gateway_ref and first.value.redirect_url
        assert adapter.start_payment(request) == first, "one idempotency key, one payment"
        other = succeeded(adapter.start_payment(make_request()), "start_payment")
        assert other.value.gateway_ref != first.value.gateway_ref

    def test_contract_amounts_round_trip_exactly_in_minor_units(
        self,
        adapter: PaymentGateway,
        make_request: Callable[..., PaymentRequest],
        round_trip_amounts: list[tuple[str, int]],
    ) -> None:
        for currency, amount in round_trip_amounts:
            started = succeeded(
                adapter.start_payment(make_request(amount, currency)), f"{amount} {currency}"
            )
            read = succeeded(adapter.get_payment(started.value.gateway_ref), "get_payment")
            assert type(read.value.amount_minor) is int, "amounts are integer minor units"
            assert (read.value.amount_minor, read.value.currency) == (amount, currency)

    def test_contract_non_positive_amounts_are_rejected(
        self, adapter: PaymentGateway, make_request: Callable[..., PaymentRequest]
    ) -> None:
        for amount in (0, -1, -10_000):
            request = make_request(amount)
            result = classified(partial(adapter.start_payment, request), f"start({amount})")
            assert isinstance(result, BusinessRejection), f"{amount} was not rejected: {result!r}"

    def test_contract_get_payment_reads_back_an_open_payment(
        self, adapter: PaymentGateway, make_request: Callable[..., PaymentRequest]
    ) -> None:
        request = make_request(4_321, "EUR")
        started = succeeded(adapter.start_payment(request), "start_payment")
        read = succeeded(adapter.get_payment(started.value.gateway_ref), "get_payment")
        assert read.value.gateway_ref == started.value.gateway_ref
        assert read.value.status in {PaymentStatus.PROCESSING, PaymentStatus.REQUIRES_ACTION}
        assert (read.value.amount_minor, read.value.currency) == (4_321, "EUR")

    def test_contract_a_finished_payment_reads_back_as_succeeded(
        self,
        adapter: PaymentGateway,
        make_request: Callable[..., PaymentRequest],
        finish_payment: FinishPayment,
    ) -> None:
        started = succeeded(adapter.start_payment(make_request(5_000)), "start_payment")
        finish_payment(started.value, True)
        read = succeeded(adapter.get_payment(started.value.gateway_ref), "get_payment")
        assert read.value.status == PaymentStatus.SUCCEEDED
        assert read.value.amount_minor == 5_000

    def test_contract_a_failed_payment_reads_back_with_a_reason(
        self,
        adapter: PaymentGateway,
        make_request: Callable[..., PaymentRequest],
        finish_payment: FinishPayment,
    ) -> None:
        started = succeeded(adapter.start_payment(make_request(5_000)), "start_payment")
        finish_payment(started.value, False)
        read = succeeded(adapter.get_payment(started.value.gateway_ref), "get_payment")
        assert read.value.status == PaymentStatus.FAILED
        assert (read.value.failure_reason or "").strip(), "a failed payment says why"

    def test_contract_unknown_payment_is_a_rejection(self, adapter: PaymentGateway) -> None:
        result = classified(lambda: adapter.get_payment(unique("no-such-payment")), "get_payment")
        assert isinstance(result, BusinessRejection), f"expected a rejection, got {result!r}"

    def test_contract_results_are_classified_never_raised(
        self, adapter: PaymentGateway, make_request: Callable[..., PaymentRequest]
    ) -> None:
        odd_requests = [
            make_request(100, "usd"),
            make_request(100, "XXXX"),
            make_request(100, description=""),
            make_request(10**15),
        ]
        for request in odd_requests:
            classified(partial(adapter.start_payment, request), f"start_payment({request})")

    def test_contract_list_payments_finds_a_finished_payment_with_its_invoice(
        self,
        adapter: PaymentGateway,
        make_request: Callable[..., PaymentRequest],
        finish_payment: FinishPayment,
    ) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)
        request = make_request(7_777, "EUR")
        started = succeeded(adapter.start_payment(request), "start_payment")
        finish_payment(started.value, True)
        read = succeeded(adapter.get_payment(started.value.gateway_ref), "get_payment").value
        listed = succeeded(adapter.list_payments(before), "list_payments").value
        assert all(isinstance(outcome, PaymentOutcome) for outcome in listed)
        mine = [outcome for outcome in listed if outcome.reference == read.reference]
        assert len(mine) == 1, f"the payment {read.reference} is listed once: {listed!r}"
        found = mine[0]
        assert found.status == PaymentStatus.SUCCEEDED
        assert (found.amount_minor, found.currency) == (7_777, "EUR")
        assert found.invoice_ref == request.invoice_ref, "reconciliation finds the invoice"
        assert found.customer_ref == request.customer_ref

    def test_contract_list_payments_leaves_out_older_payments(
        self, adapter: PaymentGateway, make_request: Callable[..., PaymentRequest]
    ) -> None:
        started = succeeded(adapter.start_payment(make_request()), "start_payment")
        read = succeeded(adapter.get_payment(started.value.gateway_ref), "get_payment").value
        later = datetime.now(UTC) + timedelta(days=1)
        listed = succeeded(adapter.list_payments(later), "list_payments").value
        assert read.reference not in {outcome.reference for outcome in listed}

    def test_contract_correctly_signed_webhook_parses(
        self, adapter: PaymentGateway, sign_webhook: SignWebhook, webhook_body: bytes
    ) -> None:
        event = adapter.parse_webhook(webhook_body, dict(sign_webhook(webhook_body)))
        assert isinstance(event, WebhookEvent)
        assert event.event_id.strip() and event.type.strip()
        assert isinstance(event.kind, EventKind)
        if event.payment is not None:
            assert type(event.payment.amount_minor) is int

    def test_contract_webhook_with_a_bad_signature_is_refused(
        self, adapter: PaymentGateway, sign_webhook: SignWebhook, webhook_body: bytes
    ) -> None:
        headers = {k: _corrupt(v) for k, v in sign_webhook(webhook_body).items()}
        with pytest.raises(SignatureError):
            adapter.parse_webhook(webhook_body, headers)

    def test_contract_webhook_with_a_tampered_body_is_refused(
        self, adapter: PaymentGateway, sign_webhook: SignWebhook, webhook_body: bytes
    ) -> None:
        headers = dict(sign_webhook(webhook_body))
        with pytest.raises(SignatureError):
            adapter.parse_webhook(webhook_body + b" ", headers)
        with pytest.raises(SignatureError):
            adapter.parse_webhook(webhook_body.replace(b"0", b"1", 1) + b"\n", headers)

    def test_contract_webhook_without_a_signature_is_refused(
        self, adapter: PaymentGateway, webhook_body: bytes
    ) -> None:
        for headers in ({}, {"Content-Type": "application/json"}):
            with pytest.raises(SignatureError):
                adapter.parse_webhook(webhook_body, headers)

    def test_contract_webhook_with_a_stale_timestamp_is_refused(
        self, adapter: PaymentGateway, sign_webhook: SignWebhook, webhook_body: bytes
    ) -> None:
        stale = int(time.time()) - 3600
        with pytest.raises(SignatureError):
            adapter.parse_webhook(webhook_body, dict(sign_webhook(webhook_body, stale)))


class SaveCard(Protocol):
    """Finish a card-saving session as the customer would, with a test card that will then
    ``"succeed"``, ``"require_authentication"`` (off-session) or ``"decline"`` when charged."""

    def __call__(self, session: PaymentSession, behaviour: str) -> None: ...


class SavedCardGatewayContract:
    """The contract of a :class:`~portal.integrations.payments.SavedCardGateway` (saved cards
    and autopay), on top of :class:`PaymentGatewayContract`.

    Fixtures to provide: ``adapter``; ``save_card(session, behaviour)`` (see :class:`SaveCard`).
    """

    BEHAVIOURS = ("succeed", "require_authentication", "decline")

    @pytest.fixture
    def adapter(self) -> SavedCardGateway:
        raise NotImplementedError(
            "subclass SavedCardGatewayContract and provide an `adapter` fixture"
        )

    @pytest.fixture
    def save_card(self) -> SaveCard:
        raise NotImplementedError("provide a `save_card(session, behaviour)` fixture")

    @pytest.fixture
    def customer(self, adapter: SavedCardGateway) -> str:
        profile = CustomerProfile(unique("customer-key"), unique("customer"), "Contoso Ltd")
        return str(succeeded(adapter.ensure_customer(profile), "ensure_customer").value)

    @pytest.fixture
    def saved(
        self, adapter: SavedCardGateway, customer: str, save_card: SaveCard
    ) -> Callable[[str], SavedCard]:
        def save(behaviour: str) -> SavedCard:
            request = CardSetupRequest(
                unique("setup"), unique("customer"), customer, "https://portal.test/cards"
            )
            session = succeeded(adapter.start_card_setup(request), "start_card_setup").value
            save_card(session, behaviour)
            outcome = succeeded(adapter.get_card_setup(session.gateway_ref), "get_card_setup")
            assert outcome.value.status == PaymentStatus.SUCCEEDED
            assert outcome.value.card is not None, "a finished setup gives the saved card"
            return cast(SavedCard, outcome.value.card)

        return save

    def charge(self, customer: str, card: SavedCard, amount: int = 2_500, **fields: Any) -> Any:
        values: dict[str, Any] = {
            "idempotency_key": unique("charge"),
            "invoice_ref": unique("invoice"),
            "customer_ref": unique("customer"),
            "gateway_customer_ref": customer,
            "card_ref": card.card_ref,
            "amount_minor": amount,
            "currency": "USD",
            "description": "Contract test autopay",
        }
        values.update(fields)
        return SavedCardCharge(**values)

    def test_contract_adapter_implements_the_protocol(self, adapter: SavedCardGateway) -> None:
        _check_identity(adapter, SavedCardGateway)

    def test_contract_ensure_customer_is_idempotent_by_key(self, adapter: SavedCardGateway) -> None:
        profile = CustomerProfile(unique("key"), unique("customer"), "Fabrikam", "ap@fab.test")
        first = succeeded(adapter.ensure_customer(profile), "ensure_customer")
        assert isinstance(first.value, str) and first.value.strip()
        assert adapter.ensure_customer(profile) == first
        other = CustomerProfile(unique("key"), unique("customer"), "Northwind")
        assert succeeded(adapter.ensure_customer(other), "ensure_customer").value != first.value

    def test_contract_an_unfinished_card_setup_has_no_card(
        self, adapter: SavedCardGateway, customer: str
    ) -> None:
        request = CardSetupRequest(unique("setup"), unique("c"), customer, "https://p.test/c")
        session = succeeded(adapter.start_card_setup(request), "start_card_setup").value
        assert session.gateway_ref and session.redirect_url
        assert adapter.start_card_setup(request) == Succeeded(session), "idempotent by key"
        read = succeeded(adapter.get_card_setup(session.gateway_ref), "get_card_setup").value
        assert read.status != PaymentStatus.SUCCEEDED and read.card is None

    def test_contract_a_saved_card_is_described_and_listed(
        self, adapter: SavedCardGateway, customer: str, saved: Callable[[str], SavedCard]
    ) -> None:
        card = saved("succeed")
        assert card.brand.strip() and len(card.last4) == 4 and card.last4.isdigit()
        assert 1 <= card.exp_month <= 12 and card.exp_year >= 2000
        listed = succeeded(adapter.list_cards(customer), "list_cards").value
        assert [c.card_ref for c in listed] == [card.card_ref]

    def test_contract_charging_a_saved_card_is_idempotent_by_key(
        self, adapter: SavedCardGateway, customer: str, saved: Callable[[str], SavedCard]
    ) -> None:
        card = saved("succeed")
        charge = self.charge(customer, card, 4_200)
        first = succeeded(adapter.charge_saved_card(charge), "charge_saved_card").value
        assert first.status == PaymentStatus.SUCCEEDED
        assert (first.amount_minor, first.currency) == (4_200, "USD")
        assert first.invoice_ref == charge.invoice_ref
        again = succeeded(adapter.charge_saved_card(charge), "charge_saved_card").value
        assert again.reference == first.reference, "one idempotency key, one charge"
        changed = replace(charge, amount_minor=4_201)
        refused = classified(partial(adapter.charge_saved_card, changed), "charge (changed)")
        assert isinstance(refused, BusinessRejection), "a reused key with a new amount is refused"
        read = succeeded(adapter.get_payment(first.reference), "get_payment").value
        assert read.status == PaymentStatus.SUCCEEDED and read.amount_minor == 4_200

    def test_contract_authentication_required_is_its_own_result(
        self, adapter: SavedCardGateway, customer: str, saved: Callable[[str], SavedCard]
    ) -> None:
        card = saved("require_authentication")
        outcome = succeeded(
            adapter.charge_saved_card(self.charge(customer, card)), "charge_saved_card"
        ).value
        assert outcome.status == PaymentStatus.REQUIRES_ACTION
        assert outcome.failure_code == AUTHENTICATION_REQUIRED

    def test_contract_a_declined_card_is_a_failed_outcome_with_a_reason(
        self, adapter: SavedCardGateway, customer: str, saved: Callable[[str], SavedCard]
    ) -> None:
        card = saved("decline")
        outcome = succeeded(
            adapter.charge_saved_card(self.charge(customer, card)), "charge_saved_card"
        ).value
        assert outcome.status == PaymentStatus.FAILED
        assert outcome.failure_code and outcome.failure_code != AUTHENTICATION_REQUIRED
        assert (outcome.failure_reason or "").strip()

    def test_contract_a_detached_card_is_gone_and_cannot_be_charged(
        self, adapter: SavedCardGateway, customer: str, saved: Callable[[str], SavedCard]
    ) -> None:
        card = saved("succeed")
        assert isinstance(adapter.detach_card(card.card_ref), Succeeded)
        assert succeeded(adapter.list_cards(customer), "list_cards").value == []
        result = classified(
            partial(adapter.charge_saved_card, self.charge(customer, card)), "charge (detached)"
        )
        assert isinstance(result, BusinessRejection), f"charged a removed card: {result!r}"

    def test_contract_non_positive_charges_are_rejected(
        self, adapter: SavedCardGateway, customer: str, saved: Callable[[str], SavedCard]
    ) -> None:
        card = saved("succeed")
        for amount in (0, -5):
            result = classified(
                partial(adapter.charge_saved_card, self.charge(customer, card, amount)),
                f"charge({amount})",
            )
            assert isinstance(result, BusinessRejection), f"{amount} was not rejected"


def _corrupt(value: str) -> str:
    """The header value with its last character changed (a signature that does not match)."""
    if not value:
        return "x"
    return value[:-1] + ("0" if value[-1] != "0" else "1")


# -- accounting systems ------------------------------------------------------------------------


class AccountingSystemContract:
    """The contract of an :class:`~portal.integrations.accounting.AccountingSystem`.

    Fixtures to provide: ``adapter``. Fixtures you may override: ``make_invoice`` and
    ``make_payment`` (sample documents your system accepts).
    """

    @pytest.fixture
    def adapter(self) -> AccountingSystem:
        raise NotImplementedError(
            "subclass AccountingSystemContract and provide an `adapter` fixture"
        )

    @pytest.fixture
    def make_invoice(self) -> Callable[..., AccountingInvoice]:
        def make(**fields: Any) -> AccountingInvoice:
            line = AccountingLine("Microsoft 365 Business Premium", 5, 11_000, 2_310)
            values: dict[str, Any] = {
                "invoice_ref": unique("invoice"),
                "number": unique("INV"),
                "customer_name": "Contract Test Ltd",
                "currency": "USD",
                "issued_on": date(2026, 1, 1),
                "due_on": date(2026, 1, 31),
                "lines": (line,),
                "total_minor": line.amount_minor + line.tax_minor,
            }
            values.update(fields)
            return AccountingInvoice(**values)

        return make

    @pytest.fixture
    def make_payment(self) -> Callable[..., AccountingPayment]:
        def make(invoice_ref: str, **fields: Any) -> AccountingPayment:
            values: dict[str, Any] = {
                "payment_ref": unique("payment"),
                "invoice_ref": invoice_ref,
                "amount_minor": 13_310,
                "currency": "USD",
                "received_on": date(2026, 1, 15),
            }
            values.update(fields)
            return AccountingPayment(**values)

        return make

    def test_contract_adapter_implements_the_protocol(self, adapter: AccountingSystem) -> None:
        _check_identity(adapter, AccountingSystem)

    def test_contract_push_invoice_honours_the_idempotency_key(
        self, adapter: AccountingSystem, make_invoice: Callable[..., AccountingInvoice]
    ) -> None:
        invoice = make_invoice()
        key = unique("push-invoice")
        first = succeeded(adapter.push_invoice(invoice, key), "push_invoice")
        assert isinstance(first.value, str) and first.value.strip()
        assert adapter.push_invoice(invoice, key) == first, "one idempotency key, one invoice"
        other = succeeded(adapter.push_invoice(make_invoice(), unique("push")), "push_invoice")
        assert other.value != first.value, "another key creates another invoice"

    def test_contract_push_payment_honours_the_idempotency_key(
        self,
        adapter: AccountingSystem,
        make_invoice: Callable[..., AccountingInvoice],
        make_payment: Callable[..., AccountingPayment],
    ) -> None:
        invoice = make_invoice()
        succeeded(adapter.push_invoice(invoice, unique("push-invoice")), "push_invoice")
        payment = make_payment(invoice.invoice_ref)
        key = unique("push-payment")
        first = succeeded(adapter.push_payment(payment, key), "push_payment")
        assert isinstance(first.value, str) and first.value.strip()
        assert adapter.push_payment(payment, key) == first, "one idempotency key, one payment"

    def test_contract_results_are_classified_never_raised(
        self,
        adapter: AccountingSystem,
        make_invoice: Callable[..., AccountingInvoice],
        make_payment: Callable[..., AccountingPayment],
    ) -> None:
        odd_invoices = [
            make_invoice(lines=(), total_minor=0),
            make_invoice(total_minor=-100),
            make_invoice(currency="XXXX"),
        ]
        for invoice in odd_invoices:
            push = partial(adapter.push_invoice, invoice, unique("push"))
            classified(push, f"push_invoice({invoice})")
        odd_payment = make_payment(unique("no-such-invoice"), amount_minor=-1)
        classified(lambda: adapter.push_payment(odd_payment, unique("push")), "push_payment")


# -- notifiers ---------------------------------------------------------------------------------


class NotifierContract:
    """The contract of a :class:`~portal.integrations.notifications.Notifier`.

    Fixtures to provide: ``adapter`` and ``deliveries(idempotency_key) -> int`` (how many
    messages actually went out for that key: read it from your fake server). Fixture you may
    override: ``recipient`` (an address your notifier accepts).
    """

    @pytest.fixture
    def adapter(self) -> Notifier:
        raise NotImplementedError("subclass NotifierContract and provide an `adapter` fixture")

    @pytest.fixture
    def deliveries(self) -> Callable[[str], int]:
        raise NotImplementedError("provide a `deliveries(idempotency_key) -> int` fixture")

    @pytest.fixture
    def recipient(self) -> str:
        return "someone@example.com"

    @pytest.fixture
    def make_notification(self, recipient: str) -> Callable[..., Notification]:
        def make(**fields: Any) -> Notification:
            values: dict[str, Any] = {
                "idempotency_key": unique("notification"),
                "to": recipient,
                "subject": "Your licence change is done",
                "text": "Microsoft 365 Business Premium: 5 licences.",
                "sender_name": "Contoso Cloud",
                "reply_to": "help@contoso.example",
            }
            values.update(fields)
            return Notification(**values)

        return make

    def test_contract_adapter_implements_the_protocol(self, adapter: Notifier) -> None:
        _check_identity(adapter, Notifier)

    def test_contract_send_is_at_most_once_per_idempotency_key(
        self,
        adapter: Notifier,
        make_notification: Callable[..., Notification],
        deliveries: Callable[[str], int],
    ) -> None:
        notification = make_notification()
        first = succeeded(adapter.send(notification), "send")
        assert first.value is None
        assert adapter.send(notification) == first
        assert deliveries(notification.idempotency_key) == 1, "a repeated send went out again"

    def test_contract_different_keys_are_different_messages(
        self,
        adapter: Notifier,
        make_notification: Callable[..., Notification],
        deliveries: Callable[[str], int],
    ) -> None:
        one, two = make_notification(), make_notification()
        succeeded(adapter.send(one), "send")
        succeeded(adapter.send(two), "send")
        assert deliveries(one.idempotency_key) == 1
        assert deliveries(two.idempotency_key) == 1

    def test_contract_results_are_classified_never_raised(
        self, adapter: Notifier, make_notification: Callable[..., Notification]
    ) -> None:
        odd = [
            make_notification(to="not an address"),
            make_notification(to=""),
            make_notification(subject="", text=""),
        ]
        for notification in odd:
            classified(partial(adapter.send, notification), f"send({notification})")
