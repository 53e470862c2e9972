"""Renewals through the adapter and the fake Partner Center (issue 14, point 4): turning the
renewal off and on, and scheduling the next term's quantity, each a ``PATCH`` of the full
subscription sent once per request id; the fake keeps and renders what it was told."""

from __future__ import annotations

from partner_center_provider import PartnerCenterProvider, ms_request_id
from partner_center_provider.fake import FakePartnerCenter, Fault

from portal.integrations.providers import AutoRenewSetting, RenewalQuantity
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from tests.plugins.partner_center_provider.conftest import OFFER


def _path(tenant: str, subscription: str) -> str:
    return f"/v1/customers/{tenant}/subscriptions/{subscription}"


def test_turning_the_renewal_off_patches_the_full_resource_once(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    assert fake.subscription(tenant, subscription)["autoRenewEnabled"] is True  # type: ignore[index]
    setting = AutoRenewSetting("renewal-off-1", tenant, subscription, False)
    result = pc.set_auto_renew(setting)
    assert isinstance(result, Succeeded) and result.value.auto_renew is False
    assert result.value.quantity == 5  # the current term is untouched
    patch = fake.requests_to(_path(tenant, subscription), "PATCH")[0]
    body = patch.json()
    assert body["autoRenewEnabled"] is False and body["quantity"] == 5
    assert body["id"] == subscription and body["offerId"] == OFFER  # the full resource
    assert patch.headers["MS-RequestId"] == ms_request_id("renewal-off-1")
    # sent again (an unknown outcome): the same request id, one effect
    assert isinstance(pc.set_auto_renew(setting), Succeeded)
    assert fake.effects(ms_request_id("renewal-off-1")) == 1
    assert fake.subscription(tenant, subscription)["autoRenewEnabled"] is False  # type: ignore[index]
    back_on = pc.set_auto_renew(AutoRenewSetting("renewal-on-2", tenant, subscription, True))
    assert isinstance(back_on, Succeeded) and back_on.value.auto_renew is True


def test_scheduling_the_next_terms_quantity_sends_next_term_instructions(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    result = pc.schedule_renewal_quantity(RenewalQuantity("next-term-1", tenant, subscription, 3))
    assert isinstance(result, Succeeded)
    assert result.value.renewal_quantity == 3 and result.value.quantity == 5
    sent = fake.requests_to(_path(tenant, subscription), "PATCH")[0].json()
    instructions = sent["scheduledNextTermInstructions"]
    assert instructions["quantity"] == 3
    assert instructions["product"] == {
        "productId": "CFQ7TTC0LH18",
        "skuId": "0001",
        "billingCycle": "monthly",
        "termDuration": "P1M",
    }
    shown = fake.subscription(tenant, subscription)
    assert shown is not None and shown["scheduledNextTermInstructions"]["quantity"] == 3
    assert shown["quantity"] == 5
    # a reduction for the next term is allowed outside the cancellation window: it is not one
    assert isinstance(
        pc.schedule_renewal_quantity(RenewalQuantity("next-term-2", tenant, subscription, 1)),
        Succeeded,
    )


def test_a_next_term_quantity_out_of_range_is_refused_and_kept_out(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    refused = pc.schedule_renewal_quantity(
        RenewalQuantity("next-term-big", tenant, subscription, fake.max_quantity + 1)
    )
    assert isinstance(refused, BusinessRejection)
    shown = fake.subscription(tenant, subscription)
    assert shown is not None and shown["scheduledNextTermInstructions"] is None
    assert isinstance(
        pc.schedule_renewal_quantity(RenewalQuantity("next-term-0", tenant, subscription, 0)),
        BusinessRejection,
    )


def test_a_technical_failure_is_retried_with_the_same_request_id(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.server_error(503, method="PATCH"))
    setting = AutoRenewSetting("renewal-off-503", tenant, subscription, False)
    assert isinstance(pc.set_auto_renew(setting), TechnicalFailure)
    assert isinstance(pc.set_auto_renew(setting), Succeeded)
    assert fake.effects(ms_request_id("renewal-off-503")) == 1


def test_the_adapter_reads_the_renewal_back(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    pc.set_auto_renew(AutoRenewSetting("renewal-off-3", tenant, subscription, False))
    read = pc.get_subscription(tenant, subscription)
    assert isinstance(read, Succeeded)
    assert read.value.auto_renew is False and read.value.term_ends_on is not None
