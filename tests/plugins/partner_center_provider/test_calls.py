"""What the adapter sends: headers, bodies, the agreement calls, and no secret in the logs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from partner_center_provider import PartnerCenterProvider, StaticTokenProvider, ms_request_id
from partner_center_provider.fake import DEFAULT_MCA_TEMPLATE_ID, FakePartnerCenter, Fault

from portal.integrations.providers import (
    AgreementAttestation,
    AgreementConfirmation,
    AgreementTemplate,
    NewSubscription,
    ProviderCustomer,
    QuantityChange,
)
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from portal.testing.fake_server import FakeResponse, FakeServer, RecordedRequest
from tests.plugins.partner_center_provider.conftest import OFFER, TOKENS


def attestation(tenant: str, request_id: str = "mca-1", **fields: object) -> AgreementAttestation:
    values: dict[str, object] = {
        "request_id": request_id,
        "customer_tenant_id": tenant,
        "template_id": DEFAULT_MCA_TEMPLATE_ID,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@customer.example",
        "phone": "+44 20 7946 0000",
        "accepted_at": datetime(2026, 11, 2, 9, 30, 15, 250_000, tzinfo=UTC),
    }
    values.update(fields)
    return AgreementAttestation(**values)  # type: ignore[arg-type]


# -- headers --------------------------------------------------------------------------------------


def test_headers_ms_request_id_is_stable_across_attempts_and_correlation_ids_are_new(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.server_error(503, method="PATCH"), Fault.unauthorized(method="PATCH"))
    wanted = QuantityChange("licence-change-17", tenant, subscription, 9)
    assert isinstance(pc.set_quantity(wanted), TechnicalFailure)  # the 503
    assert isinstance(pc.set_quantity(wanted), Succeeded)  # a 401, a refresh, then done
    path = f"/v1/customers/{tenant}/subscriptions/{subscription}"
    patches = fake.requests_to(path, "PATCH")
    gets = fake.requests_to(path, "GET")
    # one read: the second attempt sends the resource kept from the first one's read
    assert len(patches) == 3 and len(gets) == 1

    expected = ms_request_id("licence-change-17")
    assert str(uuid.UUID(expected)) == expected  # a GUID
    assert expected == str(
        uuid.uuid5(uuid.UUID("0b6f6d4e-5a6c-4c39-9d8e-3f1f0c4f2a11"), "licence-change-17")
    )
    assert [p.headers["MS-RequestId"] for p in patches] == [expected] * 3
    # reads carry a request id of their own, new every time
    read_ids = {g.headers["MS-RequestId"] for g in gets}
    assert len(read_ids) == 1 and expected not in read_ids

    everything = fake.requests
    correlation = [r.headers["MS-CorrelationId"] for r in everything]
    assert len(set(correlation)) == len(everything), "MS-CorrelationId must be new per call"
    for request in everything:
        assert uuid.UUID(request.headers["MS-CorrelationId"])
        assert request.headers["MS-Contract-Version"] == "v1"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["MS-PartnerCenter-Application"] == "CSP Portal"
        assert request.headers["Authorization"] in {f"Bearer {t}" for t in TOKENS}
    for patch in patches:
        assert patch.headers["Content-Type"] == "application/json"
        assert patch.json()["quantity"] == 9  # camelCase, absolute
    for get in gets:
        assert "Content-Type" not in get.headers


def test_a_change_sends_the_resource_of_the_last_answer_without_reading_it_again(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    path = f"/v1/customers/{tenant}/subscriptions/{subscription}"
    for target in (6, 7, 8):
        answer = pc.set_quantity(QuantityChange(f"change-{target}", tenant, subscription, target))
        assert isinstance(answer, Succeeded) and answer.value.quantity == target
    assert len(fake.requests_to(path, "GET")) == 1, "only the first change reads the resource"
    patches = fake.requests_to(path, "PATCH")
    assert len(patches) == 3
    # each PATCH carried the etag Partner Center gave in the answer before it
    assert all(p.headers.get("If-Match") for p in patches)
    assert len({p.headers["If-Match"] for p in patches}) == 3


def test_a_subscription_changed_elsewhere_is_read_again_and_changed_once(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    path = f"/v1/customers/{tenant}/subscriptions/{subscription}"
    assert isinstance(pc.set_quantity(QuantityChange("first", tenant, subscription, 6)), Succeeded)
    # someone changes the subscription in Partner Center itself: our copy's etag is stale now
    fake.update_subscription(tenant, subscription, quantity=20)
    answer = pc.set_quantity(QuantityChange("second", tenant, subscription, 21))
    assert isinstance(answer, Succeeded) and answer.value.quantity == 21
    assert fake.subscription(tenant, subscription)["quantity"] == 21  # type: ignore[index]
    assert fake.effects(ms_request_id("second")) == 1
    stale, fresh = fake.requests_to(path, "PATCH")[1:]
    assert stale.headers["If-Match"] != fresh.headers["If-Match"]
    assert len(fake.requests_to(path, "GET")) == 2, "read once at first, once after the refusal"


def test_a_guid_request_id_is_sent_as_it_is(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    guid = str(uuid.uuid4())
    assert isinstance(pc.set_quantity(QuantityChange(guid, tenant, subscription, 6)), Succeeded)
    patch = fake.requests_to(f"/v1/customers/{tenant}/subscriptions/{subscription}", "PATCH")[0]
    assert patch.headers["MS-RequestId"] == guid
    assert fake.effects(guid) == 1
    upper = ms_request_id(guid.upper())
    assert upper == guid  # the same GUID however it is written


def test_no_token_or_secret_reaches_the_logs(
    pc: PartnerCenterProvider,
    fake: FakePartnerCenter,
    tenant: str,
    subscription: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.inject(
        Fault.unauthorized(method="PATCH"),
        Fault.throttle(2, method="PATCH"),
        Fault.drop_after_effect(method="PATCH"),
    )
    for attempt in range(3):
        pc.set_quantity(QuantityChange(f"c-{attempt}", tenant, subscription, 7 + attempt))
    pc.get_subscription(tenant, "missing")
    pc.confirm_agreement(attestation(tenant))
    assert "partner center" in caplog.text  # it does log the calls
    for token in TOKENS:
        assert token not in caplog.text
    assert "Bearer" not in caplog.text
    assert "ada@customer.example" not in caplog.text  # nor the bodies


# -- purchases ------------------------------------------------------------------------------------


def test_a_purchase_posts_one_order_line_and_returns_the_new_subscription(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    purchase = NewSubscription("purchase-1", tenant, OFFER, 12, "P1Y", "annual")
    result = pc.create_subscription(purchase)
    assert isinstance(result, Succeeded)
    (order,) = fake.orders(tenant)
    new_id = order["lineItems"][0]["subscriptionId"]
    got = result.value
    assert (got.subscription_ref, got.offer_id, got.quantity, got.status) == (
        new_id,
        OFFER,
        12,
        "active",
    )
    # what importing and renewals read: the term, its billing, its dates, auto-renew
    assert (got.term, got.billing_frequency, got.auto_renew) == ("P1Y", "annual", True)
    assert got.term_ends_on is not None and got.term_started_on is not None
    assert got.term_started_on < got.term_ends_on
    assert result.value.term_ends_on - datetime.now(UTC).date() > timedelta(days=360)
    (post,) = fake.requests_to(f"/v1/customers/{tenant}/orders", "POST")
    assert post.json() == {
        "referenceCustomerId": tenant,
        "billingCycle": "annual",
        "lineItems": [
            {"lineItemNumber": 0, "offerId": OFFER, "quantity": 12, "termDuration": "P1Y"}
        ],
    }
    assert post.headers["MS-RequestId"] == ms_request_id("purchase-1")
    assert post.headers["Content-Type"] == "application/json"


def test_confirming_the_agreement_lets_a_customer_buy(
    pc: PartnerCenterProvider, fake: FakePartnerCenter
) -> None:
    newcomer = fake.add_customer()
    purchase = NewSubscription("buy-after-mca", newcomer, OFFER, 3, "P1M", "monthly")
    refused = pc.create_subscription(purchase)
    assert isinstance(refused, BusinessRejection) and refused.code == "13605"
    assert isinstance(pc.confirm_agreement(attestation(newcomer)), Succeeded)
    assert fake.mca_accepted(newcomer)
    # a new attempt is a new operation: Partner Center kept the refusal under the old id
    retry = NewSubscription("buy-after-mca-2", newcomer, OFFER, 3, "P1M", "monthly")
    assert isinstance(pc.create_subscription(retry), Succeeded)


# -- the Microsoft Customer Agreement ------------------------------------------------------------


def test_the_template_lookup_asks_for_the_customer_agreement(
    pc: PartnerCenterProvider, fake: FakePartnerCenter
) -> None:
    result = pc.get_agreement_template()
    assert result == Succeeded(
        AgreementTemplate(DEFAULT_MCA_TEMPLATE_ID, "https://aka.ms/customeragreement")
    )
    (request,) = fake.requests_to("/v1/agreements", "GET")
    assert request.query == {"agreementType": ["MicrosoftCustomerAgreement"]}


def test_confirming_sends_the_contact_the_template_and_a_utc_date_with_milliseconds(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    paris = timezone(timedelta(hours=1))
    accepted = datetime(2026, 11, 2, 10, 30, 15, 250_000, tzinfo=paris)
    result = pc.confirm_agreement(attestation(tenant, accepted_at=accepted))
    assert isinstance(result, Succeeded)
    assert result.value.template_id == DEFAULT_MCA_TEMPLATE_ID
    assert result.value.reference  # the partner user's id, from the token
    (post,) = fake.requests_to(f"/v1/customers/{tenant}/agreements", "POST")
    assert post.json() == {
        "primaryContact": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": "ada@customer.example",
            "phoneNumber": "+44 20 7946 0000",
        },
        "templateId": DEFAULT_MCA_TEMPLATE_ID,
        "dateAgreed": "2026-11-02T09:30:15.250Z",
        "type": "MicrosoftCustomerAgreement",
    }
    assert post.headers["MS-RequestId"] == ms_request_id("mca-1")


def test_a_phone_number_is_optional(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    assert isinstance(pc.confirm_agreement(attestation(tenant, phone=None)), Succeeded)
    (post,) = fake.requests_to(f"/v1/customers/{tenant}/agreements", "POST")
    assert "phoneNumber" not in post.json()["primaryContact"]


def test_confirming_the_same_acceptance_twice_succeeds_through_600061(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    first = pc.confirm_agreement(attestation(tenant, "mca-first"))
    # another operation (new request id) with the same contact: Partner Center says 600061
    second = pc.confirm_agreement(attestation(tenant, "mca-second"))
    assert isinstance(first, Succeeded) and isinstance(second, Succeeded)
    assert second.value == AgreementConfirmation(DEFAULT_MCA_TEMPLATE_ID, None)
    answers = [r for r in fake.requests_to(f"/v1/customers/{tenant}/agreements", "POST")]
    assert len(answers) == 2
    assert len(fake.agreements(tenant)) == 1
    # the same operation again is a replay of the first answer
    assert pc.confirm_agreement(attestation(tenant, "mca-first")) == first
    # a changed contact is another attestation
    other = pc.confirm_agreement(attestation(tenant, "mca-third", email="grace@customer.example"))
    assert isinstance(other, Succeeded) and len(fake.agreements(tenant)) == 2


def test_a_wrong_template_id_is_a_rejection(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    result = pc.confirm_agreement(attestation(tenant, template_id=str(uuid.uuid4())))
    assert isinstance(result, BusinessRejection) and result.code == "800002"
    assert not fake.mca_accepted(tenant) or fake.agreements(tenant) == []


# -- odd answers are classified, never raised ------------------------------------------------------


def test_odd_answers_are_technical_failures(
    make_adapter: Callable[..., PartnerCenterProvider],
    portal_fake_server: Callable[..., FakeServer],
) -> None:
    answers = iter(
        [
            FakeResponse(200, "<html>a captive portal</html>"),  # not JSON
            FakeResponse(200, {"id": "s", "status": "active"}),  # no quantity
            FakeResponse(404, "<html>not found</html>"),  # no error code
            FakeResponse(400, {"code": 2002}),  # a code but no words
            FakeResponse(200, {"items": []}),  # no template
            FakeResponse(415, {"code": 800002, "description": "bad media"}),
            FakeResponse(201, {"id": "order", "lineItems": [{"offerId": "x"}]}),  # no subscription
        ]
    )

    def vendor(request: RecordedRequest) -> FakeResponse:
        return next(answers)

    server = portal_fake_server(vendor)
    pc = make_adapter(server.url)
    assert isinstance(pc.get_subscription("t", "s"), TechnicalFailure)
    assert isinstance(pc.get_subscription("t", "s"), TechnicalFailure)
    assert isinstance(pc.get_subscription("t", "s"), TechnicalFailure)
    worded = pc.get_subscription("t", "s")
    assert isinstance(worded, BusinessRejection) and worded.reason.strip() and worded.code == "2002"
    assert isinstance(pc.get_agreement_template(), TechnicalFailure)
    assert isinstance(pc.get_subscription("t", "s"), TechnicalFailure)
    bought = pc.create_subscription(NewSubscription("p", "t", "x", 1, "P1M", "monthly"))
    assert isinstance(bought, TechnicalFailure) and "not provisioned" in bought.message


def test_a_token_provider_that_fails_is_a_technical_failure(
    make_adapter: Callable[..., PartnerCenterProvider], fake: FakePartnerCenter
) -> None:
    from partner_center_provider.auth import TokenError

    class Broken(StaticTokenProvider):
        def token(self, force_refresh: bool = False) -> str:
            raise TokenError("Microsoft Entra ID refused the refresh token exchange: invalid_grant")

    pc = make_adapter()
    pc.client.tokens = Broken()
    result = pc.get_subscription("t", "s")
    assert isinstance(result, TechnicalFailure) and "invalid_grant" in result.message
    assert fake.requests == []


def test_a_location_on_another_host_is_never_followed(pc: PartnerCenterProvider) -> None:
    client = pc.client
    assert (
        client.same_origin_path("/v1/customers/t/subscriptions/s")
        == "/v1/customers/t/subscriptions/s"
    )
    assert client.same_origin_path(client.base_url + "/v1/x?y=1") == "/v1/x?y=1"
    assert client.same_origin_path("https://evil.example/v1/x") is None


# -- listing --------------------------------------------------------------------------------------


def test_listing_gives_every_subscription_of_the_customer_and_keeps_their_resources(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    second = fake.add_subscription(tenant, OFFER, 12, term_duration="P1Y", billing_cycle="annual")
    other_customer = fake.add_customer(mca_accepted=True)
    fake.add_subscription(other_customer, OFFER, 3)
    listed = pc.list_subscriptions(tenant)
    assert isinstance(listed, Succeeded)
    by_ref = {s.subscription_ref: s for s in listed.value}
    assert set(by_ref) == {subscription, second}
    assert (by_ref[subscription].quantity, by_ref[second].quantity) == (5, 12)
    assert fake.requests_to(f"/v1/customers/{tenant}/subscriptions", "GET")
    # the listed resource (with its etag) is what the next change sends: no read before it
    changed = pc.set_quantity(QuantityChange("after-list", tenant, second, 14))
    assert isinstance(changed, Succeeded) and changed.value.quantity == 14
    path = f"/v1/customers/{tenant}/subscriptions/{second}"
    assert fake.requests_to(path, "GET") == []
    assert len(fake.requests_to(path, "PATCH")) == 1


def test_a_customer_without_subscriptions_lists_none(
    pc: PartnerCenterProvider, tenant: str
) -> None:
    assert pc.list_subscriptions(tenant) == Succeeded([])


def test_a_failed_listing_is_a_technical_failure(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    fake.inject(Fault.server_error(503, retry_after=4, method="GET"))
    failed = pc.list_subscriptions(tenant)
    assert isinstance(failed, TechnicalFailure) and failed.retry_after is not None
    assert failed.retry_after.total_seconds() == 4


# -- finding customers ---------------------------------------------------------------------------


def test_customers_are_found_by_tenant_id_or_the_start_of_their_domain(
    pc: PartnerCenterProvider, fake: FakePartnerCenter
) -> None:
    wanted = fake.add_customer(name="Fabrikam Ltd", domain="fabrikam.onmicrosoft.com")
    fake.add_customer(name="Contoso", domain="contoso.onmicrosoft.com")
    by_domain = pc.find_customers("Fabri")
    assert isinstance(by_domain, Succeeded)
    assert by_domain.value == [ProviderCustomer(wanted, "Fabrikam Ltd", "fabrikam.onmicrosoft.com")]
    (request,) = fake.requests_to("/v1/customers", "GET")
    assert json.loads(request.query["filter"][0]) == {
        "Field": "Domain",
        "Value": "fabri",
        "Operator": "starts_with",
    }
    by_id = pc.find_customers(wanted.upper())
    assert isinstance(by_id, Succeeded) and [c.tenant_id for c in by_id.value] == [wanted]
    missing = pc.find_customers(str(uuid.uuid4()))
    assert isinstance(missing, Succeeded) and missing.value == []
    fake.inject(Fault.server_error(503), times=3)
    down = pc.find_customers("fabri")
    assert isinstance(down, TechnicalFailure)
