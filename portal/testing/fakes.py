"""In-memory test doubles of every adapter kind, for tests of the core's services.

They keep everything in dicts, honour the same contracts as real adapters (the contract suites
run against them) and let a test script what goes wrong: queue a
:class:`~portal.integrations.results.TechnicalFailure` or a
:class:`~portal.integrations.results.BusinessRejection` with :meth:`fail_next`. None of them is
a plugin; register one in a test with a tiny plugin object when the app must see it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from portal.integrations.accounting import AccountingInvoice, AccountingPayment
from portal.integrations.notifications import Notification
from portal.integrations.payments import (
    PaymentOutcome,
    PaymentRequest,
    PaymentSession,
    PaymentStatus,
    SignatureError,
    WebhookEvent,
)
from portal.integrations.providers import (
    AgreementAttestation,
    AgreementConfirmation,
    AgreementTemplate,
    AutoRenewSetting,
    NewSubscription,
    ProviderCustomer,
    ProviderSubscription,
    QuantityChange,
    RenewalQuantity,
)
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure

Failure = TechnicalFailure | BusinessRejection


@dataclass
class _Script:
    """Failures queued by a test, returned (once each) before the double does its work."""

    queued: list[Failure] = field(default_factory=list)

    def fail_next(self, *failures: Failure) -> None:
        self.queued.extend(failures)

    def pop(self) -> Failure | None:
        return self.queued.pop(0) if self.queued else None


class FakeProvider:
    """A test double of a licence provider: subscriptions in a dict.

    ``effects`` counts the changes actually applied, so a test can see that a repeated request
    had one effect. Quantities below ``minimum`` are refused.
    """

    def __init__(self, key: str = "fake", minimum: int = 1) -> None:
        self.key = key
        self.display_name = "Fake provider (test double)"
        self.minimum = minimum
        self.subscriptions: dict[tuple[str, str], ProviderSubscription] = {}
        # the offer a purchase bought, until its first quantity is applied
        self.offers: dict[tuple[str, str], str] = {}
        self.results: dict[str, tuple[QuantityChange, Result[ProviderSubscription]]] = {}
        self.effects = 0
        self.agreements: dict[str, AgreementAttestation] = {}
        self.script = _Script()
        self._lock = threading.Lock()
        # renewal instructions by request id, and how many were applied (each once)
        self.instructions: dict[str, Result[ProviderSubscription]] = {}
        self.instruction_effects = 0

    def fail_next(self, *failures: Failure) -> None:
        self.script.fail_next(*failures)

    def get_subscription(
        self, customer_tenant_id: str, subscription_ref: str
    ) -> Result[ProviderSubscription]:
        found = self.subscriptions.get((customer_tenant_id, subscription_ref))
        if found is None:
            return BusinessRejection("No such subscription", code="fake.not_found")
        return Succeeded(found)

    def set_quantity(self, change: QuantityChange) -> Result[ProviderSubscription]:
        with self._lock:
            recorded = self.results.get(change.request_id)
            if recorded is not None:
                if recorded[0] != change:
                    return BusinessRejection("Request id reused", code="fake.conflict")
                return recorded[1]
            failure = self.script.pop()
            if isinstance(failure, TechnicalFailure):
                return failure
            result: Result[ProviderSubscription]
            if failure is not None:
                result = failure
            elif change.target_quantity < self.minimum:
                result = BusinessRejection(f"The quantity must be at least {self.minimum}")
            else:
                key = (change.customer_tenant_id, change.subscription_ref)
                bought = self.subscriptions.get(key)
                offer = bought.offer_id if bought else self.offers.pop(key, "FAKE-OFFER")
                subscription = ProviderSubscription(
                    change.subscription_ref, offer, change.target_quantity, "active"
                )
                self.subscriptions[(change.customer_tenant_id, change.subscription_ref)] = (
                    subscription
                )
                self.effects += 1
                result = Succeeded(subscription)
            self.results[change.request_id] = (change, result)
            return result

    def find_customers(self, query: str) -> Result[list[ProviderCustomer]]:
        """Every tenant it holds subscriptions of matches its own id; none has a domain."""
        with self._lock:
            tenants = {tenant for tenant, _ref in self.subscriptions}
        wanted = query.strip().lower()
        return Succeeded(
            [ProviderCustomer(t, f"Fake customer {t[:8]}") for t in sorted(tenants) if t == wanted]
        )

    def list_subscriptions(self, customer_tenant_id: str) -> Result[list[ProviderSubscription]]:
        with self._lock:
            return Succeeded(
                [
                    subscription
                    for (tenant, _ref), subscription in self.subscriptions.items()
                    if tenant == customer_tenant_id
                ]
            )

    def create_subscription(self, purchase: NewSubscription) -> Result[ProviderSubscription]:
        """A purchase is a first quantity on a reference derived from the request id."""
        ref = f"fake-{uuid.uuid5(uuid.NAMESPACE_URL, purchase.request_id)}"
        change = QuantityChange(
            purchase.request_id, purchase.customer_tenant_id, ref, purchase.quantity
        )
        with self._lock:
            self.offers[(purchase.customer_tenant_id, ref)] = purchase.offer_id
        return self.set_quantity(change)

    def get_agreement_template(self) -> Result[AgreementTemplate]:
        return Succeeded(FAKE_AGREEMENT)

    def set_auto_renew(self, setting: AutoRenewSetting) -> Result[ProviderSubscription]:
        return self._instruct(
            setting.request_id,
            (setting.customer_tenant_id, setting.subscription_ref),
            auto_renew=setting.auto_renew,
        )

    def schedule_renewal_quantity(self, renewal: RenewalQuantity) -> Result[ProviderSubscription]:
        if renewal.quantity < self.minimum:
            return BusinessRejection(f"The quantity must be at least {self.minimum}")
        return self._instruct(
            renewal.request_id,
            (renewal.customer_tenant_id, renewal.subscription_ref),
            renewal_quantity=renewal.quantity,
        )

    def _instruct(
        self, request_id: str, key: tuple[str, str], **values: object
    ) -> Result[ProviderSubscription]:
        """Apply a renewal instruction once per request id (a repeat gets the first answer)."""
        with self._lock:
            recorded = self.instructions.get(request_id)
            if recorded is not None:
                return recorded
            failure = self.script.pop()
            if isinstance(failure, TechnicalFailure):
                return failure
            result: Result[ProviderSubscription]
            found = self.subscriptions.get(key)
            if failure is not None:
                result = failure
            elif found is None:
                result = BusinessRejection("No such subscription", code="fake.not_found")
            else:
                updated = replace(found, **values)  # type: ignore[arg-type]
                self.subscriptions[key] = updated
                self.instruction_effects += 1
                result = Succeeded(updated)
            self.instructions[request_id] = result
            return result

    def confirm_agreement(self, attestation: AgreementAttestation) -> Result[AgreementConfirmation]:
        with self._lock:
            self.agreements[attestation.customer_tenant_id] = attestation
        return Succeeded(AgreementConfirmation(attestation.template_id, "fake-agreement"))


FAKE_AGREEMENT = AgreementTemplate(
    "fake-template", "https://www.microsoft.com/licensing/docs/customeragreement"
)


class FakePaymentGateway:
    """A test double of a payment gateway. Finish a payment with :meth:`finish`; webhooks are
    signed like the demo gateway's (``Fake-Signature: t=<unix>,v1=<hmac-sha256 hex>``)."""

    SIGNATURE_HEADER = "Fake-Signature"

    def __init__(self, key: str = "fake", secret: str = "fake-webhook-secret") -> None:  # noqa: S107
        self.key = key
        self.display_name = "Fake payment gateway (test double)"
        self.secret = secret
        self.payments: dict[str, tuple[PaymentRequest, PaymentOutcome]] = {}
        self.by_key: dict[str, str] = {}
        self.script = _Script()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def fail_next(self, *failures: Failure) -> None:
        self.script.fail_next(*failures)

    def start_payment(self, request: PaymentRequest) -> Result[PaymentSession]:
        with self._lock:
            failure = self.script.pop()
            if failure is not None:
                return failure
            if isinstance(request.amount_minor, bool) or not isinstance(request.amount_minor, int):
                return BusinessRejection("The amount must be an integer of minor units")
            if request.amount_minor <= 0:
                return BusinessRejection("The amount must be more than zero")
            if len(request.currency) != 3 or not request.currency.isupper():
                return BusinessRejection("Unknown currency")
            ref = self.by_key.get(request.idempotency_key)
            if ref is None:
                ref = f"fake_{next(self._numbers)}"
                self.by_key[request.idempotency_key] = ref
                outcome = PaymentOutcome(
                    ref,
                    PaymentStatus.PROCESSING,
                    request.amount_minor,
                    request.currency,
                    invoice_ref=request.invoice_ref,
                    customer_ref=request.customer_ref,
                    created_at=datetime.now(UTC),
                )
                self.payments[ref] = (request, outcome)
            elif self.payments[ref][0] != request:
                return BusinessRejection("Idempotency key reused for another payment")
            return Succeeded(PaymentSession(ref, f"https://pay.fake.test/{ref}"))

    def get_payment(self, gateway_ref: str) -> Result[PaymentOutcome]:
        found = self.payments.get(gateway_ref)
        if found is None:
            return BusinessRejection("No such payment")
        return Succeeded(found[1])

    def list_payments(self, since: datetime) -> Result[list[PaymentOutcome]]:
        failure = self.script.pop()
        if failure is not None:
            return failure
        return Succeeded(
            [
                outcome
                for _, outcome in self.payments.values()
                if outcome.created_at is None or outcome.created_at >= since
            ]
        )

    def finish(self, gateway_ref: str, succeed: bool, reason: str = "Card declined") -> None:
        """What the customer does on the gateway's page."""
        request, outcome = self.payments[gateway_ref]
        status = PaymentStatus.SUCCEEDED if succeed else PaymentStatus.FAILED
        self.payments[gateway_ref] = (
            request,
            replace(outcome, status=status, failure_reason=None if succeed else reason),
        )

    def sign(
        self, body: bytes, timestamp: int | None = None, clock: Callable[[], float] = time.time
    ) -> dict[str, str]:
        when = int(clock()) if timestamp is None else timestamp
        mac = hmac.new(self.secret.encode(), f"{when}.".encode() + body, hashlib.sha256)
        return {self.SIGNATURE_HEADER: f"t={when},v1={mac.hexdigest()}"}

    def event_body(self, gateway_ref: str, event_id: str = "evt_fake_1") -> bytes:
        outcome = self.payments[gateway_ref][1]
        return json.dumps(
            {
                "id": event_id,
                "type": f"payment.{outcome.status.value}",
                "payment": {
                    "gateway_ref": gateway_ref,
                    "status": outcome.status.value,
                    "amount_minor": outcome.amount_minor,
                    "currency": outcome.currency,
                    "failure_reason": outcome.failure_reason,
                },
            }
        ).encode()

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        header = next(
            (v for k, v in headers.items() if k.lower() == self.SIGNATURE_HEADER.lower()), ""
        )
        fields: dict[str, str] = {}
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            fields[name] = value
        if not fields.get("t", "").isdigit() or "v1" not in fields:
            raise SignatureError("missing or malformed signature")
        timestamp = int(fields["t"])
        if abs(time.time() - timestamp) > 300:
            raise SignatureError("stale signature")
        expected = self.sign(body, timestamp)[self.SIGNATURE_HEADER]
        if not hmac.compare_digest(expected, f"t={timestamp},v1={fields['v1']}"):
            raise SignatureError("signature mismatch")
        try:
            data = json.loads(body)
            payment = data.get("payment")
            outcome = (
                None
                if payment is None
                else PaymentOutcome(
                    payment["gateway_ref"],
                    PaymentStatus(payment["status"]),
                    int(payment["amount_minor"]),
                    payment["currency"],
                    payment.get("failure_reason"),
                )
            )
            return WebhookEvent(str(data["id"]), str(data["type"]), outcome)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise SignatureError("malformed event") from error


class FakeAccountingSystem:
    """A test double of an accounting system: documents in dicts, ids ``INV-1``, ``PAY-1`` …"""

    def __init__(self, key: str = "fake") -> None:
        self.key = key
        self.display_name = "Fake accounting system (test double)"
        self.invoices: dict[str, AccountingInvoice] = {}
        self.payments: dict[str, AccountingPayment] = {}
        self.by_key: dict[str, str] = {}
        self.script = _Script()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def fail_next(self, *failures: Failure) -> None:
        self.script.fail_next(*failures)

    def push_invoice(self, invoice: AccountingInvoice, idempotency_key: str) -> Result[str]:
        with self._lock:
            if idempotency_key in self.by_key:
                return Succeeded(self.by_key[idempotency_key])
            failure = self.script.pop()
            if failure is not None:
                return failure
            if len(invoice.currency) != 3:
                return BusinessRejection("Unknown currency")
            if invoice.total_minor < 0:
                return BusinessRejection("An invoice cannot total less than zero")
            system_id = f"INV-{next(self._numbers)}"
            self.invoices[system_id] = invoice
            self.by_key[idempotency_key] = system_id
            return Succeeded(system_id)

    def push_payment(self, payment: AccountingPayment, idempotency_key: str) -> Result[str]:
        with self._lock:
            if idempotency_key in self.by_key:
                return Succeeded(self.by_key[idempotency_key])
            failure = self.script.pop()
            if failure is not None:
                return failure
            if payment.amount_minor <= 0:
                return BusinessRejection("A payment must be more than zero")
            if payment.invoice_ref not in {i.invoice_ref for i in self.invoices.values()}:
                return BusinessRejection("The payment's invoice is not in the books")
            system_id = f"PAY-{next(self._numbers)}"
            self.payments[system_id] = payment
            self.by_key[idempotency_key] = system_id
            return Succeeded(system_id)


class FakeNotifier:
    """A test double of a notifier: ``sent`` holds what went out, once per idempotency key."""

    def __init__(self, key: str = "fake") -> None:
        self.key = key
        self.display_name = "Fake notifier (test double)"
        self.sent: list[Notification] = []
        self.script = _Script()
        self._lock = threading.Lock()

    def fail_next(self, *failures: Failure) -> None:
        self.script.fail_next(*failures)

    def deliveries(self, idempotency_key: str) -> int:
        return sum(1 for n in self.sent if n.idempotency_key == idempotency_key)

    def send(self, notification: Notification) -> Result[None]:
        with self._lock:
            if self.deliveries(notification.idempotency_key):
                return Succeeded(None)
            failure = self.script.pop()
            if failure is not None:
                return failure
            if "@" not in notification.to:
                return BusinessRejection(f"Not an address: {notification.to!r}")
            self.sent.append(notification)
            return Succeeded(None)
