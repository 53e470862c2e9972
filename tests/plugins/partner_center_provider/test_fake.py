"""The fake Partner Center itself follows the documented contract (driven with plain httpx), and
the test kit's FakeServer can delay an answer or drop the connection."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from partner_center_provider import PartnerCenterClient, PartnerCenterProvider, StaticTokenProvider
from partner_center_provider.fake import (
    DEFAULT_MCA_TEMPLATE_ID,
    DEFAULT_MCLOUD_TEMPLATE_ID,
    FakePartnerCenter,
    Fault,
)

from portal.integrations.providers import QuantityChange
from portal.integrations.results import Succeeded
from portal.testing.fake_server import FakeResponse, FakeServer, RecordedRequest
from tests.plugins.partner_center_provider.conftest import OFFER

AUTH = {"Authorization": "Bearer t", "Accept": "application/json"}


@pytest.fixture
def http(fake: FakePartnerCenter) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, headers=AUTH, timeout=5) as client:
        yield client


def patch(
    http: httpx.Client, tenant: str, sub: str, quantity: int, request_id: str | None = None
) -> httpx.Response:
    return http.patch(
        f"/v1/customers/{tenant}/subscriptions/{sub}",
        json={"id": sub, "quantity": quantity},
        headers={"MS-RequestId": request_id or str(uuid.uuid4())},
    )


def test_a_bearer_token_is_required(
    fake: FakePartnerCenter, tenant: str, subscription: str
) -> None:
    path = f"{fake.url}/v1/customers/{tenant}/subscriptions/{subscription}"
    assert httpx.get(path).status_code == 401
    assert httpx.get(path, headers={"Authorization": "Basic eDp5"}).status_code == 401
    assert httpx.get(path, headers={"Authorization": "Bearer x"}).status_code == 200


def test_errors_carry_the_documented_body(http: httpx.Client, tenant: str) -> None:
    answer = http.get(f"/v1/customers/{tenant}/subscriptions/nope")
    assert answer.status_code == 404
    body = answer.json()
    assert body["code"] == 20003 and body["description"] == "Subscription with id nope not found."
    assert set(body) >= {
        "code",
        "description",
        "data",
        "source",
        "message",
        "errorName",
        "isRetryable",
    }


def test_without_agreement_type_the_cloud_agreement_is_listed(http: httpx.Client) -> None:
    default = http.get("/v1/agreements").json()
    assert [i["templateId"] for i in default["items"]] == [DEFAULT_MCLOUD_TEMPLATE_ID]
    assert default["items"][0]["agreementType"] == "MicrosoftCloudAgreement"
    mca = http.get("/v1/agreements", params={"agreementType": "MicrosoftCustomerAgreement"}).json()
    assert [i["templateId"] for i in mca["items"]] == [DEFAULT_MCA_TEMPLATE_ID]
    both = http.get("/v1/agreements", params={"agreementType": "*"}).json()
    assert both["totalCount"] == 2 and both["attributes"] == {"objectType": "Collection"}


def test_a_repeated_request_id_is_replayed_with_no_second_effect(
    fake: FakePartnerCenter, http: httpx.Client, tenant: str, subscription: str
) -> None:
    request_id = str(uuid.uuid4())
    first = patch(http, tenant, subscription, 8, request_id)
    fake.update_subscription(tenant, subscription, quantity=2)  # changed elsewhere meanwhile
    again = patch(http, tenant, subscription, 8, request_id)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert fake.effects(request_id) == 1 and fake.replays(request_id) == 1
    assert fake.subscription(tenant, subscription)["quantity"] == 2  # type: ignore[index]
    # the same id for another call is refused
    other = http.post(
        f"/v1/customers/{tenant}/orders",
        json={"lineItems": [{"offerId": OFFER, "quantity": 1}]},
        headers={"MS-RequestId": request_id},
    )
    assert other.status_code == 400 and other.json()["code"] == 800002


def test_a_not_now_answer_is_not_kept_for_replay(
    fake: FakePartnerCenter, http: httpx.Client, tenant: str, subscription: str
) -> None:
    request_id = str(uuid.uuid4())
    fake.inject(Fault.throttle(9))
    throttled = patch(http, tenant, subscription, 8, request_id)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "9"
    assert "Try again in 9 seconds" in throttled.json()["message"]
    stale = http.patch(
        f"/v1/customers/{tenant}/subscriptions/{subscription}",
        json={"quantity": 8},
        headers={"MS-RequestId": request_id, "If-Match": "stale-etag"},
    )
    assert stale.status_code == 400 and stale.json()["code"] == 2055
    assert patch(http, tenant, subscription, 8, request_id).status_code == 200
    assert fake.effects(request_id) == 1


def test_the_request_id_must_be_a_guid_and_writes_json(
    http: httpx.Client, tenant: str, subscription: str
) -> None:
    assert patch(http, tenant, subscription, 8, "not-a-guid").json()["code"] == 800002
    form = http.patch(
        f"/v1/customers/{tenant}/subscriptions/{subscription}",
        content=b"quantity=8",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415


def test_a_per_tenant_budget_throttles_with_retry_after(
    fake: FakePartnerCenter, http: httpx.Client, tenant: str, subscription: str
) -> None:
    fake.throttle_limit, fake.throttle_window = 3, 30.0
    path = f"/v1/customers/{tenant}/subscriptions/{subscription}"
    statuses = [http.get(path).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    retry = int(http.get(path).headers["Retry-After"])
    assert 1 <= retry <= 30
    other = fake.add_subscription(fake.add_customer(), OFFER, 1)
    assert http.get(f"/v1/customers/{fake.add_customer()}/subscriptions/{other}").status_code == 404


def test_faults_match_by_method_and_path_and_are_used_once(
    fake: FakePartnerCenter, http: httpx.Client, tenant: str, subscription: str
) -> None:
    fake.inject(
        Fault.server_error(502, method="PATCH"), Fault.business(409, 800060, "busy", path="/orders")
    )
    assert fake.pending_faults == 2
    path = f"/v1/customers/{tenant}/subscriptions/{subscription}"
    assert http.get(path).status_code == 200  # neither matches a GET
    assert patch(http, tenant, subscription, 6).status_code == 502
    assert patch(http, tenant, subscription, 6).status_code == 200
    assert fake.pending_faults == 1
    fake.clear_faults()
    assert fake.pending_faults == 0


def test_latency_delays_every_answer(
    fake: FakePartnerCenter, http: httpx.Client, tenant: str
) -> None:
    fake.latency = 0.1
    started = time.monotonic()
    http.get("/v1/agreements")
    assert time.monotonic() - started >= 0.1


def test_the_state_and_effect_log(
    fake: FakePartnerCenter, http: httpx.Client, tenant: str, subscription: str
) -> None:
    request_id = str(uuid.uuid4())
    patch(http, tenant, subscription, 8, request_id)
    (effect,) = fake.effect_log()
    assert (effect.request_id, effect.method) == (request_id, "PATCH")
    assert fake.total_effects == 1
    shown = fake.subscription(tenant, subscription)
    assert shown is not None
    assert shown["quantity"] == 8 and shown["offerId"] == OFFER and shown["status"] == "active"
    assert shown["refundableQuantity"]["totalQuantity"] == 8
    assert shown["commitmentEndDate"].endswith("T00:00:00Z")
    assert fake.subscription(tenant, "missing") is None
    listed = http.get(f"/v1/customers/{tenant}/subscriptions").json()
    assert [s["id"] for s in listed["items"]] == [subscription]


def test_sixteen_concurrent_clients_change_quantities_exactly_once() -> None:
    """A small version of the benchmark: 16 threads, 160 changes, 20 ms per answer."""
    with FakePartnerCenter(latency=0.02) as fake:
        tenant = fake.add_customer(mca_accepted=True)
        subs = [fake.add_subscription(tenant, OFFER, 1) for _ in range(16)]
        adapter = PartnerCenterProvider(
            PartnerCenterClient(fake.url, StaticTokenProvider(), timeout=5)
        )
        changes = [
            QuantityChange(f"bench-{n}", tenant, subs[n % 16], 2 + n // 16) for n in range(160)
        ]

        def run(worker: int) -> list[Any]:
            mine = [c for n, c in enumerate(changes) if n % 16 == worker]
            return [adapter.set_quantity(c) for c in mine]

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            results = [r for batch in pool.map(run, range(16)) for r in batch]
        elapsed = time.monotonic() - started
        adapter.close()
        assert all(isinstance(r, Succeeded) for r in results), results
        assert fake.total_effects == 160
        assert all(fake.effects(c.request_id) == 1 for c in changes)
        assert {fake.subscription(tenant, s)["quantity"] for s in subs} == {11}  # type: ignore[index]
        # 10 rounds of (read + write) at 20 ms each: ~0.4 s when the 16 run side by side
        assert elapsed < 5, f"the fake serialised the clients: {elapsed:.2f} s"  # serial: 6.4 s
        assert not fake.errors


# -- the test kit's FakeServer: delayed answers and dropped connections -------------------------


def test_fake_server_can_answer_late_and_drop_the_connection() -> None:
    def handler(request: RecordedRequest) -> FakeResponse:
        if request.path == "/late":
            return FakeResponse(200, {"ok": True}, delay=0.5)
        if request.path == "/drop":
            return FakeResponse(200, {"ok": True}, drop=True)
        return FakeResponse(200, {"ok": True})

    with FakeServer(handler) as server, httpx.Client(base_url=server.url) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get("/late", timeout=0.2)
        assert client.get("/late", timeout=2).json() == {"ok": True}
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/drop", timeout=2)
        assert client.get("/fine", timeout=2).json() == {"ok": True}  # still serving
        assert [r.path for r in server.requests] == ["/late", "/late", "/drop", "/fine"]
