"""The Partner Center licence provider: :class:`PartnerCenterProvider`.

Calls (Partner Center REST API v1, see the plugin's README):

- read a subscription: ``GET /v1/customers/{tenant}/subscriptions/{id}``; list a customer's:
  ``GET /v1/customers/{tenant}/subscriptions`` (:meth:`PartnerCenterProvider.list_subscriptions`);
- change a quantity: ``PATCH`` the full subscription back with the new absolute ``quantity``
  (``If-Match`` its etag). The resource is the one Partner Center last sent us for that
  subscription (kept per process, see :class:`KnownResources`), read first only when we have
  none; when the etag is stale (``2055``) it is read again and the ``PATCH`` sent once more.
  ``200`` is done; ``202`` + ``Location`` is polled;
- buy: ``POST /v1/customers/{tenant}/orders`` with one line item;
- the Microsoft Customer Agreement: ``GET /v1/agreements?agreementType=MicrosoftCustomerAgreement``
  and ``POST /v1/customers/{tenant}/agreements``.

Every write carries the operation's ``request_id`` as ``MS-RequestId`` on every attempt, so a
repeat has one effect. Every method returns a result and never raises.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from dateutil.relativedelta import relativedelta

from partner_center_provider.auth import MsalTokenProvider, StaticTokenProvider, TokenProvider
from partner_center_provider.client import PartnerCenterClient
from partner_center_provider.errors import (
    ETAG_STALE,
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
    AutoRenewSetting,
    NewSubscription,
    ProviderCustomer,
    ProviderSubscription,
    QuantityChange,
    RenewalQuantity,
)
from portal.integrations.results import BusinessRejection, Result, Succeeded, TechnicalFailure

log = logging.getLogger(__name__)

T = TypeVar("T")
MCA = "MicrosoftCustomerAgreement"
AGREEMENT_EXISTS = "600061"
QUANTITY_OUT_OF_RANGE = "2002"
BILLING_CYCLES = {"monthly": "monthly", "annual": "annual", "triennial": "triennial"}


class KnownResources:
    """The subscription resources Partner Center last sent us, most recently used first kept.

    A quantity change must send the whole resource with its etag; reading it before every
    ``PATCH`` would double the calls, and the answer to the previous change already holds it.
    A stale copy is harmless: its etag no longer matches and Partner Center refuses the write
    (``2055``) without applying it, and the adapter reads the resource afresh.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        # kept as JSON text: each caller gets its own copy to change, and parsing one is
        # cheaper than a deep copy
        self._resources: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: str, ref: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._resources.get((tenant, ref))
            if found is None:
                return None
            self._resources.move_to_end((tenant, ref))
        resource: dict[str, Any] = json.loads(found)
        return resource

    def keep(self, tenant: str, resource: dict[str, Any]) -> None:
        ref = resource.get("id")
        if not isinstance(ref, str) or not ref:
            return
        text = json.dumps(resource)
        with self._lock:
            self._resources[(tenant, ref)] = text
            self._resources.move_to_end((tenant, ref))
            while len(self._resources) > self.capacity:
                self._resources.popitem(last=False)

    def has(self, tenant: str, ref: str) -> bool:
        with self._lock:
            return (tenant, ref) in self._resources

    def forget(self, tenant: str, ref: str) -> None:
        with self._lock:
            self._resources.pop((tenant, ref), None)


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
        self.known = KnownResources()

    @classmethod
    def from_settings(
        cls, settings: PartnerCenterSettings, token_provider: TokenProvider | None = None
    ) -> PartnerCenterProvider:
        """The adapter for ``settings``: ``token_provider``, else the fixed token of a local
        fake (``STATIC_TOKEN``), else msal App+User tokens."""
        tokens = token_provider or (
            StaticTokenProvider(settings.static_token)
            if settings.static_token
            else MsalTokenProvider.from_settings(settings)
        )
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

    def find_customers(self, query: str) -> Result[list[ProviderCustomer]]:
        """A tenant id is read as ``GET /v1/customers/{id}`` (unknown: none found); anything
        else is the start of a domain, ``GET /v1/customers?size=…&filter=`` with Partner
        Center's one operator for customers, ``starts_with``."""
        return self._guarded("finding the customer", lambda: self._find_customers(query))

    def list_subscriptions(self, customer_tenant_id: str) -> Result[list[ProviderSubscription]]:
        """Every subscription of the customer, as Partner Center has them now. Each resource
        is kept, so a quantity change of a listed subscription needs no read first."""
        return self._guarded("listing the subscriptions", lambda: self._list(customer_tenant_id))

    def calls_needed(self, change: QuantityChange) -> int:
        """A ``PATCH``, and a read before it when we hold no copy of the subscription."""
        known = self.known.has(change.customer_tenant_id, change.subscription_ref)
        return 1 if known else 2

    def create_subscription(self, purchase: NewSubscription) -> Result[ProviderSubscription]:
        if purchase.quantity < 1:
            return _below_minimum()
        return self._guarded("buying the subscription", lambda: self._purchase(purchase))

    def get_agreement_template(self) -> Result[AgreementTemplate]:
        return self._guarded("reading the agreement template", self._template)

    def confirm_agreement(self, attestation: AgreementAttestation) -> Result[AgreementConfirmation]:
        return self._guarded("confirming the agreement", lambda: self._confirm(attestation))

    # -- renewals (issue 14, point 4) -------------------------------------------------------

    def set_auto_renew(self, setting: AutoRenewSetting) -> Result[ProviderSubscription]:
        """``PATCH`` the full subscription with ``autoRenewEnabled`` (``MS-RequestId``: the
        instruction's request id)."""

        def edit(resource: dict[str, Any]) -> None:
            resource["autoRenewEnabled"] = setting.auto_renew

        return self._guarded(
            "changing the renewal",
            lambda: self._patch_renewal(
                setting.request_id, setting.customer_tenant_id, setting.subscription_ref, edit
            ),
        )

    def schedule_renewal_quantity(self, renewal: RenewalQuantity) -> Result[ProviderSubscription]:
        """``PATCH`` the full subscription with ``scheduledNextTermInstructions``: the same
        product, billing cycle and term, and the next term's ``quantity``."""
        if renewal.quantity < 1:
            return _below_minimum()

        def edit(resource: dict[str, Any]) -> None:
            resource["scheduledNextTermInstructions"] = _next_term(resource, renewal.quantity)

        return self._guarded(
            "scheduling the renewal",
            lambda: self._patch_renewal(
                renewal.request_id, renewal.customer_tenant_id, renewal.subscription_ref, edit
            ),
        )

    def _patch_renewal(
        self, request_id: str, tenant: str, ref: str, edit: Callable[[dict[str, Any]], None]
    ) -> Result[ProviderSubscription]:
        """Edit the subscription we hold (or read it first) and ``PATCH`` it whole; a stale
        copy (its etag refused) is read again and sent once more with the same request id."""
        resource = self.known.get(tenant, ref)
        if resource is not None:
            answer = self._patch_resource(request_id, tenant, ref, resource, edit)
            if not _stale_etag(answer):
                return answer.result
            self.known.forget(tenant, ref)
        read = self._read_resource(tenant, ref)
        if not isinstance(read, Succeeded):
            return read
        return self._patch_resource(request_id, tenant, ref, read.value, edit).result

    def _patch_resource(
        self,
        request_id: str,
        tenant: str,
        ref: str,
        resource: dict[str, Any],
        edit: Callable[[dict[str, Any]], None],
    ) -> _Answer:
        what = "changing the renewal"
        path = _subscription_path(tenant, ref)
        body = json.loads(json.dumps(resource))  # our copy stays as Partner Center sent it
        edit(body)
        etag = (body.get("attributes") or {}).get("etag")
        try:
            response = self.client.request(
                "PATCH",
                path,
                json=body,
                request_id=request_id,
                if_match=etag if isinstance(etag, str) and etag else None,
            )
        except Exception as error:
            return _Answer(classify_exception(error, what, sent_write=True))
        if response.status_code == 200:
            kept = _json_object(response)
            if kept is not None:
                self.known.keep(tenant, kept)
            return _Answer(_subscription_result(response), response)
        if response.status_code == 202:
            quantity = body.get("quantity")
            target = quantity if isinstance(quantity, int) else 0
            return _Answer(self._follow(response, path, target, tenant), response)
        return _Answer(classify_response(response, what), response)

    # -- the calls ---------------------------------------------------------------------------

    def _read(self, tenant: str, ref: str) -> Result[ProviderSubscription]:
        read = self._read_resource(tenant, ref)
        if not isinstance(read, Succeeded):
            return read
        return _subscription_of(read.value)

    def _list(self, tenant: str) -> Result[list[ProviderSubscription]]:
        what = "listing the subscriptions"
        try:
            response = self.client.request("GET", _subscriptions_path(tenant))
        except Exception as error:
            return classify_exception(error, what, sent_write=False)
        if response.status_code != 200:
            return classify_response(response, what)
        body = _json_object(response)
        items = body.get("items") if body is not None else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return TechnicalFailure("Partner Center sent a subscription list that is not one")
        listed: list[ProviderSubscription] = []
        for resource in items:
            subscription = _subscription_of(resource)
            if not isinstance(subscription, Succeeded):
                return subscription
            self.known.keep(tenant, resource)
            listed.append(subscription.value)
        return Succeeded(listed)

    def _find_customers(self, query: str) -> Result[list[ProviderCustomer]]:
        what = "finding the customer"
        text = query.strip()
        if not text:
            return Succeeded([])
        tenant = _guid(text)
        if tenant is not None:
            path, params = f"/v1/customers/{_segment(tenant)}", None
        else:
            wanted = {"Field": "Domain", "Value": text.lower(), "Operator": "starts_with"}
            path, params = "/v1/customers", {"size": str(FIND_LIMIT), "filter": json.dumps(wanted)}
        try:
            response = self.client.request("GET", path, params=params)
        except Exception as error:
            return classify_exception(error, what, sent_write=False)
        if response.status_code == 404 and tenant is not None:
            return Succeeded([])
        if response.status_code != 200:
            return classify_response(response, what)
        body = _json_object(response)
        if body is None:
            return TechnicalFailure("Partner Center sent customers that are not JSON")
        items = [body] if tenant is not None else body.get("items")
        if not isinstance(items, list):
            return TechnicalFailure("Partner Center sent a customer list that is not one")
        found = [_customer(item) for item in items if isinstance(item, dict)]
        return Succeeded([customer for customer in found if customer is not None])

    def _read_resource(self, tenant: str, ref: str) -> Result[dict[str, Any]]:
        """The subscription resource as Partner Center has it now (and kept for next time)."""
        what = "reading the subscription"
        try:
            response = self.client.request("GET", _subscription_path(tenant, ref))
        except Exception as error:
            return classify_exception(error, what, sent_write=False)
        if response.status_code != 200:
            return classify_response(response, what)
        resource = _json_object(response)
        if resource is None:
            return TechnicalFailure("Partner Center sent a subscription that is not JSON")
        self.known.keep(tenant, resource)
        return Succeeded(resource)

    def _set_quantity(self, change: QuantityChange) -> Result[ProviderSubscription]:
        tenant, ref = change.customer_tenant_id, change.subscription_ref
        resource = self.known.get(tenant, ref)
        if resource is not None:
            answer = self._patch_quantity(change, resource)
            if not _stale_etag(answer):
                return answer.result
            self.known.forget(tenant, ref)  # changed elsewhere since we saw it: read it again
        read = self._read_resource(tenant, ref)
        if not isinstance(read, Succeeded):
            return read
        return self._patch_quantity(change, read.value).result

    def _patch_quantity(self, change: QuantityChange, resource: dict[str, Any]) -> _Answer:
        what = "changing the quantity"
        tenant = change.customer_tenant_id
        path = _subscription_path(tenant, change.subscription_ref)
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
            return _Answer(classify_exception(error, what, sent_write=True))
        if response.status_code == 200:
            body = _json_object(response)
            if body is not None:
                self.known.keep(tenant, body)
            return _Answer(_subscription_result(response), response)
        if response.status_code == 202:
            return _Answer(self._follow(response, path, change.target_quantity, tenant), response)
        return _Answer(classify_response(response, what), response)

    def _follow(
        self, accepted: httpx.Response, path: str, target: int, tenant: str
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
                body = _json_object(response)
                if body is not None:
                    self.known.keep(tenant, body)
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


@dataclass(frozen=True)
class _Answer:
    """A ``PATCH``'s result, with the response it came from (None when none came)."""

    result: Result[ProviderSubscription]
    response: httpx.Response | None = None


def _stale_etag(answer: _Answer) -> bool:
    """Partner Center refused the write because the resource changed since we read it."""
    if answer.response is None or answer.response.status_code not in (400, 409, 412):
        return False
    return answer.response.status_code == 412 or parse_error(answer.response).code == ETAG_STALE


def _subscription_of(resource: dict[str, Any]) -> Result[ProviderSubscription]:
    try:
        return Succeeded(_subscription(resource))
    except (KeyError, TypeError, ValueError) as error:
        return TechnicalFailure(f"Partner Center sent a subscription we cannot read ({error})")


def _below_minimum() -> BusinessRejection:
    return BusinessRejection("The quantity must be at least 1.", code=QUANTITY_OUT_OF_RANGE)


def _segment(value: str) -> str:
    """``value`` as one URL path segment (a tenant or subscription id never escapes it)."""
    return quote(value, safe="")


def _subscriptions_path(tenant: str) -> str:
    return f"/v1/customers/{_segment(tenant)}/subscriptions"


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
    return _subscription_of(body)


def _subscription(body: dict[str, Any]) -> ProviderSubscription:
    quantity = body["quantity"]
    if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
        raise ValueError(f"quantity {quantity!r}")
    auto_renew = body.get("autoRenewEnabled")
    return ProviderSubscription(
        subscription_ref=str(body["id"]),
        offer_id=str(body.get("offerId") or ""),
        quantity=int(quantity),
        status=str(body.get("status") or "none"),
        term_ends_on=_date(body.get("commitmentEndDate")),
        term=_text(body.get("termDuration")),
        billing_frequency=_text(body.get("billingCycle")),
        term_started_on=_term_start(body),
        auto_renew=auto_renew if isinstance(auto_renew, bool) else None,
        name=_text(body.get("friendlyName")) or _text(body.get("offerName")),
        renewal_quantity=_scheduled_quantity(body.get("scheduledNextTermInstructions")),
    )


FIND_LIMIT = 20


def _guid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text)) if len(text.strip("{}")) == 36 else None
    except ValueError:
        return None


def _customer(resource: dict[str, Any]) -> ProviderCustomer | None:
    """A Customer resource's ``companyProfile`` (``tenantId``, ``companyName``, ``domain``)."""
    profile = resource.get("companyProfile")
    profile = profile if isinstance(profile, dict) else {}
    tenant = _guid(str(profile.get("tenantId") or resource.get("id") or ""))
    if tenant is None:
        return None
    name = _text(profile.get("companyName")) or tenant
    return ProviderCustomer(tenant, name, _text(profile.get("domain")))


def _term_start(body: dict[str, Any]) -> date | None:
    """The current term's first day: the day after the commitment's end less the term's
    length. ``effectiveStartDate`` is a back-dating and alignment date, not the term's start;
    it is the answer only when the end or the term is not given."""
    ends = _date(body.get("commitmentEndDate"))
    months = {"P1M": 1, "P1Y": 12, "P3Y": 36}.get(str(body.get("termDuration") or ""))
    if ends is None or months is None:
        return _date(body.get("effectiveStartDate"))
    return ends + timedelta(days=1) - relativedelta(months=months)


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _scheduled_quantity(instructions: Any) -> int | None:
    """The next term's quantity of ``scheduledNextTermInstructions``, when one is scheduled."""
    if not isinstance(instructions, dict):
        return None
    quantity = instructions.get("quantity")
    return quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None


def _next_term(resource: dict[str, Any], quantity: int) -> dict[str, Any]:
    """``scheduledNextTermInstructions`` renewing the same product (``offerId`` is
    ``productId:skuId:availabilityId``), billing cycle and term with ``quantity`` seats."""
    parts = str(resource.get("offerId") or "").split(":")
    product: dict[str, Any] = {
        "productId": parts[0] if parts and parts[0] else None,
        "skuId": parts[1] if len(parts) > 1 else None,
        "availabilityId": parts[2] if len(parts) > 2 else None,
        "billingCycle": resource.get("billingCycle"),
        "termDuration": resource.get("termDuration"),
    }
    return {"product": {k: v for k, v in product.items() if v}, "quantity": quantity}


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
