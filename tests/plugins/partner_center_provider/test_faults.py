"""How the adapter classifies Partner Center's faults, and that a retry has one effect.

Each test injects faults into the fake Partner Center and drives the real client over HTTP.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from partner_center_provider import PartnerCenterProvider, StaticTokenProvider, ms_request_id
from partner_center_provider.fake import FakePartnerCenter, Fault

from portal.integrations.providers import NewSubscription, QuantityChange
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from tests.plugins.partner_center_provider.conftest import OFFER, TIMEOUT


def sub_path(tenant: str, subscription: str) -> str:
    return f"/v1/customers/{tenant}/subscriptions/{subscription}"


def change(
    tenant: str, subscription: str, quantity: int, request_id: str = "change-1"
) -> QuantityChange:
    return QuantityChange(request_id, tenant, subscription, quantity)


# -- technical failures: retried later with the same MS-RequestId ------------------------------


def test_429_is_a_technical_failure_with_the_retry_after_and_no_effect(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.throttle(retry_after=17, method="PATCH"))
    wanted = change(tenant, subscription, 8)
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure)
    assert result.retry_after == timedelta(seconds=17)
    assert "429" in result.message
    assert fake.effects(wanted.request_id) == 0
    assert fake.subscription(tenant, subscription)["quantity"] == 5  # type: ignore[index]
    retried = pc.set_quantity(wanted)
    assert isinstance(retried, Succeeded) and retried.value.quantity == 8
    assert fake.effects(wanted.request_id) == 1


def test_429_on_the_read_before_the_write_is_a_technical_failure_too(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.throttle(retry_after=3, method="GET"))
    result = pc.set_quantity(change(tenant, subscription, 8))
    assert isinstance(result, TechnicalFailure) and result.retry_after == timedelta(seconds=3)
    assert not fake.requests_to(sub_path(tenant, subscription), "PATCH")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_and_408_are_technical_failures(
    pc: PartnerCenterProvider,
    fake: FakePartnerCenter,
    tenant: str,
    subscription: str,
    status: int,
) -> None:
    fake.inject(Fault.server_error(status, method="PATCH"))
    wanted = change(tenant, subscription, 9)
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure), result
    assert str(status) in result.message
    assert fake.effects(wanted.request_id) == 0
    assert isinstance(pc.set_quantity(wanted), Succeeded)
    assert fake.effects(wanted.request_id) == 1


def test_a_503_with_retry_after_keeps_it(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.server_error(503, retry_after=4, method="PATCH"))
    result = pc.set_quantity(change(tenant, subscription, 9))
    assert isinstance(result, TechnicalFailure) and result.retry_after == timedelta(seconds=4)


def test_a_timeout_after_the_effect_is_an_unknown_outcome_and_the_retry_has_no_second_effect(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.timeout(TIMEOUT + 0.7, method="PATCH"))
    wanted = change(tenant, subscription, 12)
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure), result
    assert "timed out" in result.message and "unknown outcome" in result.message
    assert fake.effects(wanted.request_id) == 1  # it did happen
    retried = pc.set_quantity(wanted)
    assert isinstance(retried, Succeeded) and retried.value.quantity == 12
    assert fake.effects(wanted.request_id) == 1, "the retry had a second effect"
    assert fake.replays(wanted.request_id) == 1
    assert fake.total_effects == 1


def test_a_timeout_before_the_effect_leaves_nothing_done_and_the_retry_does_it_once(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.timeout(TIMEOUT + 0.5, effect=False, method="PATCH"))
    wanted = change(tenant, subscription, 12)
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure) and "unknown outcome" in result.message
    assert fake.effects(wanted.request_id) == 0
    assert isinstance(pc.set_quantity(wanted), Succeeded)
    assert fake.effects(wanted.request_id) == 1


def test_a_read_that_times_out_is_a_plain_technical_failure(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.timeout(TIMEOUT + 0.5, method="GET"))
    result = pc.get_subscription(tenant, subscription)
    assert isinstance(result, TechnicalFailure)
    assert "in time" in result.message and "unknown" not in result.message


def test_a_dropped_connection_after_the_effect_is_an_unknown_outcome_resolved_by_reading_back(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.drop_after_effect(method="PATCH"))
    wanted = change(tenant, subscription, 11, request_id="licence-change-42")
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure), result
    assert "unknown outcome" in result.message and "dropped" in result.message
    # the portal reads back before it resends: the change is there
    read = pc.get_subscription(tenant, subscription)
    assert isinstance(read, Succeeded) and read.value.quantity == 11
    # a resend with the same MS-RequestId answers like the first and changes nothing
    again = pc.set_quantity(wanted)
    assert isinstance(again, Succeeded) and again.value.quantity == 11
    assert fake.effects(wanted.request_id) == 1
    assert fake.effects(ms_request_id(wanted.request_id)) == 1
    patches = fake.requests_to(sub_path(tenant, subscription), "PATCH")
    assert len(patches) == 2
    assert {p.headers["MS-RequestId"] for p in patches} == {ms_request_id("licence-change-42")}


def test_a_dropped_connection_before_the_effect_is_also_unknown_and_the_resend_applies_it_once(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.drop_before_effect(method="PATCH"))
    wanted = change(tenant, subscription, 11)
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure) and "unknown outcome" in result.message
    assert fake.subscription(tenant, subscription)["quantity"] == 5  # type: ignore[index]
    assert isinstance(pc.set_quantity(wanted), Succeeded)
    assert fake.effects(wanted.request_id) == 1


def test_a_dropped_purchase_is_resent_with_the_same_request_id_and_buys_once(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    fake.inject(Fault.drop_after_effect(method="POST"))
    purchase = NewSubscription("purchase-7", tenant, OFFER, 4, "P1Y", "annual")
    first = pc.create_subscription(purchase)
    assert isinstance(first, TechnicalFailure) and "unknown outcome" in first.message
    again = pc.create_subscription(purchase)
    assert isinstance(again, Succeeded) and again.value.quantity == 4
    assert len(fake.orders(tenant)) == 1 and len(fake.subscriptions(tenant)) == 1
    assert fake.effects("purchase-7") == 1


def test_nobody_listening_is_a_technical_failure(
    make_adapter: Callable[..., PartnerCenterProvider], tenant: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pc = make_adapter(f"http://127.0.0.1:{port}")
    result = pc.set_quantity(change(tenant, "any", 3))
    assert isinstance(result, TechnicalFailure) and "could not connect" in result.message


# -- 401: one token refresh, then give up ---------------------------------------------------------


def test_a_401_refreshes_the_token_once_and_the_retry_succeeds(
    pc: PartnerCenterProvider,
    fake: FakePartnerCenter,
    tokens: StaticTokenProvider,
    tenant: str,
    subscription: str,
) -> None:
    fake.inject(Fault.unauthorized(method="PATCH"))
    wanted = change(tenant, subscription, 6)
    result = pc.set_quantity(wanted)
    assert isinstance(result, Succeeded) and result.value.quantity == 6
    assert tokens.refreshes == 1
    patches = fake.requests_to(sub_path(tenant, subscription), "PATCH")
    assert [p.headers["Authorization"] for p in patches] == [
        "Bearer pc-token-first-4f1c",
        "Bearer pc-token-second-9a7e",
    ]
    assert len({p.headers["MS-RequestId"] for p in patches}) == 1
    assert fake.effects(wanted.request_id) == 1


def test_an_expired_token_is_replaced_and_the_new_one_kept(
    pc: PartnerCenterProvider,
    fake: FakePartnerCenter,
    tokens: StaticTokenProvider,
    tenant: str,
    subscription: str,
) -> None:
    fake.expire_token("pc-token-first-4f1c")
    assert isinstance(pc.get_subscription(tenant, subscription), Succeeded)
    assert isinstance(pc.get_subscription(tenant, subscription), Succeeded)
    assert tokens.refreshes == 1


def test_a_second_401_is_a_technical_failure_after_exactly_one_refresh(
    pc: PartnerCenterProvider,
    fake: FakePartnerCenter,
    tokens: StaticTokenProvider,
    tenant: str,
    subscription: str,
) -> None:
    fake.inject(Fault.unauthorized(method="PATCH"), times=2)
    wanted = change(tenant, subscription, 6)
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure), result
    assert "401" in result.message
    assert tokens.refreshes == 1
    assert len(fake.requests_to(sub_path(tenant, subscription), "PATCH")) == 2
    assert fake.effects(wanted.request_id) == 0


def test_a_401_for_missing_mfa_says_so(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.unauthorized(code=900421), times=2)
    result = pc.get_subscription(tenant, subscription)
    assert isinstance(result, TechnicalFailure)
    assert "900421" in result.message and "multi-factor" in result.message


# -- business rejections: never retried ---------------------------------------------------------


def test_2002_quantity_out_of_bounds_is_a_rejection_with_the_providers_reason(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.max_quantity = 10
    result = pc.set_quantity(change(tenant, subscription, 11))
    assert result == BusinessRejection(
        "Subscription quantity is not within minimum and maximum allowed quantity", code="2002"
    )
    assert len(fake.requests_to(sub_path(tenant, subscription), "PATCH")) == 1


@pytest.mark.parametrize("quantity", [0, -3])
def test_a_quantity_below_one_is_refused_without_calling(
    pc: PartnerCenterProvider,
    fake: FakePartnerCenter,
    tenant: str,
    subscription: str,
    quantity: int,
) -> None:
    result = pc.set_quantity(change(tenant, subscription, quantity))
    assert isinstance(result, BusinessRejection) and result.code == "2002"
    bought = pc.create_subscription(
        NewSubscription("p-0", tenant, OFFER, quantity, "P1M", "monthly")
    )
    assert isinstance(bought, BusinessRejection) and bought.code == "2002"
    assert fake.requests == []


def test_800045_a_reduction_outside_the_cancellation_window_is_a_rejection(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    # 10 seats, none refundable any more (bought long ago)
    old = fake.add_subscription(tenant, OFFER, 10, refundable_quantity=0)
    result = pc.set_quantity(change(tenant, old, 8))
    assert isinstance(result, BusinessRejection)
    assert result.code == "800045"
    assert result.reason.startswith("Seat reduction is not allowed outside the cancellation window")
    assert len(fake.requests_to(sub_path(tenant, old), "PATCH")) == 1
    # an increase is always allowed; the added seats may be reduced again within their window
    assert isinstance(pc.set_quantity(change(tenant, old, 13, "up")), Succeeded)
    assert isinstance(pc.set_quantity(change(tenant, old, 11, "down-2")), Succeeded)
    refused = pc.set_quantity(change(tenant, old, 9, "down-2-more"))
    assert isinstance(refused, BusinessRejection) and refused.code == "800045"
    assert fake.subscription(tenant, old)["quantity"] == 11  # type: ignore[index]


def test_the_refund_window_closes_with_time(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    start = fake.clock()
    assert isinstance(pc.set_quantity(change(tenant, subscription, 4, "a")), Succeeded)
    fake.clock = lambda: start + timedelta(days=7, minutes=1)
    result = pc.set_quantity(change(tenant, subscription, 3, "b"))
    assert isinstance(result, BusinessRejection) and result.code == "800045"
    read = fake.subscription(tenant, subscription)
    assert read is not None and read["refundableQuantity"]["totalQuantity"] == 0


def test_13605_a_purchase_without_the_customer_agreement_is_a_rejection(
    pc: PartnerCenterProvider, fake: FakePartnerCenter
) -> None:
    newcomer = fake.add_customer()
    purchase = NewSubscription("buy-1", newcomer, OFFER, 3, "P1M", "monthly")
    result = pc.create_subscription(purchase)
    assert isinstance(result, BusinessRejection) and result.code == "13605"
    assert "Microsoft Customer Agreement" in result.reason
    assert len(fake.requests_to(f"/v1/customers/{newcomer}/orders", "POST")) == 1
    assert fake.orders(newcomer) == []


def test_20003_an_unknown_subscription_is_a_rejection(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str
) -> None:
    read = pc.get_subscription(tenant, "no-such-subscription")
    assert read == BusinessRejection(
        "Subscription with id no-such-subscription not found.", code="20003"
    )
    changed = pc.set_quantity(change(tenant, "no-such-subscription", 3))
    assert isinstance(changed, BusinessRejection) and changed.code == "20003"
    assert len(fake.requests) == 2  # one read each, never retried


def test_an_injected_business_error_is_a_rejection_with_its_code_as_a_string(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(
        Fault.business(
            403, 800027, "This catalog item is not eligible for quantity changes.", method="PATCH"
        )
    )
    wanted = change(tenant, subscription, 9)
    result = pc.set_quantity(wanted)
    assert result == BusinessRejection(
        "This catalog item is not eligible for quantity changes.", code="800027"
    )
    # the same request again gets the same answer (Partner Center keeps it by MS-RequestId)
    assert pc.set_quantity(wanted) == result
    assert fake.effects(wanted.request_id) == 0


def test_a_string_error_code_is_read_too(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.inject(Fault.business(409, "800014", "A pending adjustment exists.", method="PATCH"))
    result = pc.set_quantity(change(tenant, subscription, 9))
    # 800014 only means "not now": a technical failure, retried later
    assert isinstance(result, TechnicalFailure) and "800014" in result.message


def test_a_change_while_another_is_being_applied_is_retried_later(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.quantity_change_delay = math.inf
    first = pc.set_quantity(change(tenant, subscription, 9, "slow"))
    assert isinstance(first, TechnicalFailure)
    second = pc.set_quantity(change(tenant, subscription, 10, "next"))
    assert isinstance(second, TechnicalFailure) and "800060" in second.message


# -- 202 Accepted + Location ----------------------------------------------------------------------


def test_a_202_is_polled_at_its_location_until_the_quantity_shows(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.quantity_change_delay = 0.2
    wanted = change(tenant, subscription, 14)
    result = pc.set_quantity(wanted)
    assert isinstance(result, Succeeded) and result.value.quantity == 14
    gets = fake.requests_to(sub_path(tenant, subscription), "GET")
    assert len(gets) >= 3  # the read before the PATCH, then at least two polls
    assert fake.effects(wanted.request_id) == 1


def test_a_202_that_never_finishes_is_a_technical_failure_still_in_progress(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    fake.quantity_change_delay = math.inf
    wanted = change(tenant, subscription, 14)
    result = pc.set_quantity(wanted)
    assert isinstance(result, TechnicalFailure), result
    assert "still in progress" in result.message
    assert result.retry_after is not None and result.retry_after > timedelta(0)
    assert fake.effects(wanted.request_id) == 1
    # resending it (same request id) polls again and never applies it twice
    assert isinstance(pc.set_quantity(wanted), TechnicalFailure)
    assert fake.effects(wanted.request_id) == 1


def test_a_202_resolved_later_is_seen_by_the_read_back(
    make_adapter: Callable[..., PartnerCenterProvider],
    fake: FakePartnerCenter,
    tenant: str,
    subscription: str,
) -> None:
    pc = make_adapter(poll_limit=0.1)
    fake.quantity_change_delay = 0.4
    wanted = change(tenant, subscription, 2)
    assert isinstance(pc.set_quantity(wanted), TechnicalFailure)
    fake.quantity_change_delay = 0
    time.sleep(0.4)
    read = pc.get_subscription(tenant, subscription)
    assert isinstance(read, Succeeded) and read.value.quantity == 2
    again = pc.set_quantity(wanted)
    assert isinstance(again, Succeeded) and again.value.quantity == 2
    assert fake.effects(wanted.request_id) == 1


def test_the_etag_guards_the_write(
    pc: PartnerCenterProvider, fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    before = fake.subscription(tenant, subscription)
    assert before is not None
    assert isinstance(pc.set_quantity(change(tenant, subscription, 7)), Succeeded)
    patch = fake.requests_to(sub_path(tenant, subscription), "PATCH")[0]
    assert patch.headers["If-Match"] == before["attributes"]["etag"]
    body = patch.json()
    assert body["quantity"] == 7 and body["offerId"] == OFFER and body["id"] == subscription
