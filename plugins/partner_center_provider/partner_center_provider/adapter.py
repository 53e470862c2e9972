"""The Partner Center licence provider: :class:`PartnerCenterProvider`.

Calls (Partner Center REST API v1, see the plugin's README):

- read a subscription: ``GET /v1/customers/{tenant}/subscriptions/{id}``;
- change a quantity: read the full subscription, then ``PATCH`` it back with the new absolute
  ``quantity`` (``If-Match`` its etag). ``200`` is done; ``202`` + ``Location`` is polled;
- buy: ``POST /v1/customers/{tenant}/orders`` with one line item;
- the Microsoft Customer Agreement: ``GET /v1/agreements?agreementType=MicrosoftCustomerAgreement``
  and ``POST /v1/customers/{tenant}/agreements``.

Every write carries the operation's ``request_id`` as ``MS-RequestId`` on every attempt, so a
repeat has one effect. Every method returns a result and never raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from partner_center_provider.auth import MsalTokenProvider, TokenProvider
from partner_center_provider.client import PartnerCenterClient
from partner_center_provider.errors import (
    classify_exception,
    classify_response,
    parse_error,
    retry_after,
)
from partner_center_provider.settings import PartnerCenterSettings
from portal.integrations.providers import (
    AgreementAttestation,
    AgreementConfirmation,
    AgreementTemplate,
    NewSubscription,
    ProviderSubscription,
    QuantityChange,
)
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure

log = logging.getLogger(__name__)

T = TypeVar("T")
MCA = "MicrosoftCustomerAgreement"
AGREEMENT_EXISTS = "600061"
QUANTITY_OUT_OF_RANGE = "2002"
BILLING_CYCLES = {"monthly": "monthly", "annual": "annual", "triennial": "triennial"}


class PartnerCenterProvider:
    """A :class:`~portal.integrations.providers.ProviderAdapter` for Microsoft Partner Center.

    ``poll_interval`` and ``poll_limit`` (seconds) govern how long a ``202 Accepted`` quantity
    change is followed before the call ends as a technical failure ("still in progress").
    """

    key = "partner_center"
    display_name = "Microsoft Partner Center"

    def __init__(
        self,
        client: PartnerCenterClient,
        *,
        poll_interval: float = 2.0,
        poll_limit: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.poll_interval = poll_interval
        self.poll_limit = poll_limit
        self._sleep = sleep
        self._monotonic = monotonic

    @classmethod
    def from_settings(
        cls, settings: PartnerCenterSettings, token_provider: TokenProvider | None = None
    ) -> PartnerCenterProvider:
        """The adapter for ``settings``; msal App+User tokens unless ``token_provider``."""
        tokens = token_provider or MsalTokenProvider.from_settings(settings)
        client = PartnerCenterClient(
            settings.base_url,
            tokens,
            timeout=settings.timeout_seconds,
            application_name=settings.application_name,
        )
        return cls(
            client,
            poll_interval=settings.poll_interval_seconds,
            poll_limit=settings.poll_limit_seconds,
        )

    # -- the Protocol ------------------------------------------------------------------------

    def get_subscription(
        self, customer_tenant_id: str, subscription_ref: str
    ) -> Result[ProviderSubscription]:
        return self._guarded(
            "reading the subscription", lambda: self._read(customer_tenant_id, subscription_ref)
        )

    def set_quantity(self, change: QuantityChange) -> Result[ProviderSubscription]:
        if change.target_quantity < 1:
            return _below_minimum()
        return self._guarded("changing the quantity", lambda: self._set_quantity(change))

    def create_subscription(self, purchase: NewSubscription) -> Result[ProviderSubscription]:
        if purchase.quantity < 1:
            return _below_minimum()
        return self._guarded("buying the subscription", lambda: self._purchase(purchase))

    def get_agreement_template(self) -> Result[AgreementTemplate]:
        return self._guarded("reading the agreement template", self._template)

    def confirm_agreement(self, attestation: AgreementAttestation) -> Result[AgreementConfirmation]:
        return self._guarded("confirming the agreement", lambda: self._confirm(attestation))

    # -- the calls ---------------------------------------------------------------------------

    def _read(self, tenant: str, ref: str) -> Result[ProviderSubscription]:
        what = "reading the subscription"
        try:
            response = self.client.request("GET", _subscription_path(tenant, ref))
        except Exception as error:
            return classify_exception(error, what, sent_write=False)
        if response.status_code != 200:
            return classify_response(response, what)
        return _subscription_result(response)

    def _set_quantity(self, change: QuantityChange) -> Result[ProviderSubscription]:
        what = "changing the quantity"
        path = _subscription_path(change.customer_tenant_id, change.subscription_ref)
        try:
            current = self.client.request("GET", path)
        except Exception as error:
            return classify_exception(error, "reading the subscription", sent_write=False)
        if current.status_code != 200:
            return classify_response(current, "reading the subscription")
        resource = _json_object(current)
        if resource is None:
            return TechnicalFailure("Partner Center sent a subscription that is not JSON")
        resource["quantity"] = change.target_quantity
        etag = (resource.get("attributes") or {}).get("etag")
        try:
            response = self.client.request(
                "PATCH",
                path,
                json=resource,
                request_id=change.request_id,
                if_match=etag if isinstance(etag, str) and etag else None,
            )
        except Exception as error:
            return classify_exception(error, what, sent_write=True)
        if response.status_code == 200:
            return _subscription_result(response)
        if response.status_code == 202:
            return self._follow(response, path, change.target_quantity)
        return classify_response(response, what)

    def _follow(
        self, accepted: httpx.Response, path: str, target: int
    ) -> Result[ProviderSubscription]:
        """Poll a ``202 Accepted`` change until the subscription shows ``target``."""
        location = accepted.headers.get("Location")
        poll_path = (self.client.same_origin_path(location) if location else None) or path
        interval = self.poll_interval
        hinted = retry_after(accepted)
        deadline = self._monotonic() + self.poll_limit
        last = "no answer yet"
        while self._monotonic() + interval <= deadline:
            self._sleep(interval)
            try:
                response = self.client.request("GET", poll_path)
            except Exception as error:
                last = classify_exception(error, "polling the change", sent_write=False).message
                continue
            if response.status_code != 200:
                outcome = classify_response(response, "polling the change")
                if isinstance(outcome, BusinessRejection):
                    return outcome
                last = outcome.message
                continue
            read = _subscription_result(response)
            if not isinstance(read, Succeeded):
                return read
            if read.value.quantity == target:
                return read
            last = f"the subscription still shows {read.value.quantity}"
        wait = max(timedelta(seconds=interval), hinted or timedelta(0))
        return TechnicalFailure(
            f"Partner Center accepted the quantity change (202) and it is still in progress "
            f"after {self.poll_limit:g} s ({last}); read the subscription back before sending "
            "it again",
            retry_after=wait,
        )

    def _purchase(self, purchase: NewSubscription) -> Result[ProviderSubscription]:
        what = "buying the subscription"
        tenant = purchase.customer_tenant_id
        order = {
            "referenceCustomerId": tenant,
            "billingCycle": BILLING_CYCLES.get(
                purchase.billing_frequency.lower(), purchase.billing_frequency
            ),
            "lineItems": [
                {
                    "lineItemNumber": 0,
                    "offerId": purchase.offer_id,
                    "quantity": purchase.quantity,
                    "termDuration": purchase.term,
                }
            ],
        }
        try:
            response = self.client.request(
                "POST",
                f"/v1/customers/{_segment(tenant)}/orders",
                json=order,
                request_id=purchase.request_id,
            )
        except Exception as error:
            return classify_exception(error, what, sent_write=True)
        if response.status_code not in (200, 201):
            return classify_response(response, what)
        created = _json_object(response)
        if created is None:
            return TechnicalFailure("Partner Center sent an order that is not JSON")
        line = _first(created.get("lineItems"))
        subscription_id = line.get("subscriptionId") if line else None
        if line is None or not subscription_id:
            return TechnicalFailure(
                f"Partner Center took the order {created.get('id')!r} but has not provisioned "
                "its subscription yet; send the same purchase again later (same request id)",
                retry_after=timedelta(seconds=self.poll_interval),
            )
        read = self._read(tenant, str(subscription_id))
        if isinstance(read, Succeeded):
            return read
        # the order stands: describe the new subscription from it rather than fail the purchase
        log.info("partner center: bought %s, but reading it back failed: %s", subscription_id, read)
        return Succeeded(
            ProviderSubscription(
                subscription_ref=str(subscription_id),
                offer_id=str(line.get("offerId") or purchase.offer_id),
                quantity=int(line.get("quantity") or purchase.quantity),
                status=str(created.get("status") or "pending"),
            )
        )

    def _template(self) -> Result[AgreementTemplate]:
        what = "reading the agreement template"
        try:
            response = self.client.request("GET", "/v1/agreements", params={"agreementType": MCA})
        except Exception as error:
            return classify_exception(error, what, sent_write=False)
        if response.status_code != 200:
            return classify_response(response, what)
        body = _json_object(response) or {}
        items = [i for i in body.get("items") or [] if isinstance(i, dict)]
        current = [i for i in items if i.get("agreementType", MCA) == MCA]
        if not current:
            return TechnicalFailure(
                "Partner Center listed no Microsoft Customer Agreement template"
            )
        chosen = current[0]
        template_id, link = chosen.get("templateId"), chosen.get("agreementLink")
        if not template_id or not link:
            return TechnicalFailure("Partner Center's agreement template has no id or link")
        return Succeeded(AgreementTemplate(str(template_id), str(link)))

    def _confirm(self, attestation: AgreementAttestation) -> Result[AgreementConfirmation]:
        what = "confirming the customer's acceptance of the Microsoft Customer Agreement"
        contact = {
            "firstName": attestation.first_name,
            "lastName": attestation.last_name,
            "email": attestation.email,
        }
        if attestation.phone:
            contact["phoneNumber"] = attestation.phone
        body = {
            "primaryContact": contact,
            "templateId": attestation.template_id,
            "dateAgreed": _utc_timestamp(attestation.accepted_at),
            "type": MCA,
        }
        try:
            response = self.client.request(
                "POST",
                f"/v1/customers/{_segment(attestation.customer_tenant_id)}/agreements",
                json=body,
                request_id=attestation.request_id,
            )
        except Exception as error:
            return classify_exception(error, what, sent_write=True)
        if response.status_code in (200, 201):
            created = _json_object(response) or {}
            user = created.get("userId")
            return Succeeded(
                AgreementConfirmation(
                    str(created.get("templateId") or attestation.template_id),
                    reference=str(user) if user else None,
                )
            )
        if parse_error(response).code == AGREEMENT_EXISTS:
            return Succeeded(AgreementConfirmation(attestation.template_id, reference=None))
        return classify_response(response, what)

    # -- helpers -------------------------------------------------------------------------------

    def _guarded(self, what: str, call: Callable[[], Result[T]]) -> Result[T]:
        """``call()``, with anything it raises turned into a technical failure."""
        try:
            return call()
        except Exception as error:
            log.exception("partner center: %s failed unexpectedly", what)
            return TechnicalFailure(f"{what} failed unexpectedly ({type(error).__name__})")

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"PartnerCenterProvider({self.client!r})"


def _below_minimum() -> BusinessRejection:
    return BusinessRejection("The quantity must be at least 1.", code=QUANTITY_OUT_OF_RANGE)


def _segment(value: str) -> str:
    """``value`` as one URL path segment (a tenant or subscription id never escapes it)."""
    return quote(value, safe="")


def _subscription_path(tenant: str, ref: str) -> str:
    return f"/v1/customers/{_segment(tenant)}/subscriptions/{_segment(ref)}"


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _first(value: Any) -> dict[str, Any] | None:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return None


def _subscription_result(response: httpx.Response) -> Result[ProviderSubscription]:
    body = _json_object(response)
    if body is None:
        return TechnicalFailure("Partner Center sent a subscription that is not JSON")
    try:
        return Succeeded(_subscription(body))
    except (KeyError, TypeError, ValueError) as error:
        return TechnicalFailure(f"Partner Center sent a subscription we cannot read ({error})")


def _subscription(body: dict[str, Any]) -> ProviderSubscription:
    quantity = body["quantity"]
    if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
        raise ValueError(f"quantity {quantity!r}")
    return ProviderSubscription(
        subscription_ref=str(body["id"]),
        offer_id=str(body.get("offerId") or ""),
        quantity=int(quantity),
        status=str(body.get("status") or "none"),
        term_ends_on=_date(body.get("commitmentEndDate")),
    )


def _date(value: Any) -> date | None:
    """A Partner Center date (``2026-11-30`` or ``2026-11-30T00:00:00Z``), None when absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _utc_timestamp(moment: datetime) -> str:
    """``2026-11-02T09:30:00.000Z``: UTC with milliseconds, as Partner Center expects."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
