"""``MsalTokenProvider``: Microsoft's msal exchanging the App+User refresh token against a local
Entra ID token endpoint on 127.0.0.1.

msal only accepts an https authority, so the provider is given the authority
``https://login.fake.test/<tenant>`` and an ``http_client`` (a ``requests.Session``, msal's own
transport) that sends whatever msal asks of that host to the fake instead: msal's real code runs,
over real HTTP, with no network beyond the loopback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from partner_center_provider import MsalTokenProvider, PartnerCenterClient, PartnerCenterProvider
from partner_center_provider.auth import PARTNER_CENTER_SCOPE, TokenError
from partner_center_provider.fake import FakePartnerCenter, Fault

from portal.integrations.results import Succeeded, TechnicalFailure
from portal.testing.fake_server import FakeResponse, FakeServer, RecordedRequest

FAKE_LOGIN = "https://login.fake.test"
PARTNER_TENANT = "partner-tenant-0001"
SECRET = "client-secret-0b7a"
FIRST_REFRESH = "refresh-token-first-11aa"


class EntraFake:
    """Tenant discovery and a token endpoint with single-use, rotating refresh tokens."""

    def __init__(self) -> None:
        self.valid_refresh = {FIRST_REFRESH}
        self.issued = 0
        self.exchanges: list[dict[str, list[str]]] = []

    def __call__(self, request: RecordedRequest) -> FakeResponse:
        base = f"{FAKE_LOGIN}/{PARTNER_TENANT}"
        if request.path == f"/{PARTNER_TENANT}/v2.0/.well-known/openid-configuration":
            return FakeResponse(
                200,
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                },
            )
        if request.path == f"/{PARTNER_TENANT}/oauth2/v2.0/token" and request.method == "POST":
            form = parse_qs(request.body.decode())
            self.exchanges.append(form)
            given = form.get("refresh_token", [""])[0]
            if form.get("client_secret") != [SECRET] or given not in self.valid_refresh:
                return FakeResponse(
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "AADSTS70000: The refresh token is not valid.",
                    },
                )
            self.valid_refresh.discard(given)  # single use: the rotated one replaces it
            self.issued += 1
            rotated = f"refresh-token-{self.issued + 1}-rotated"
            self.valid_refresh.add(rotated)
            return FakeResponse(
                200,
                {
                    "token_type": "Bearer",
                    "scope": PARTNER_CENTER_SCOPE,
                    "expires_in": 3600,
                    "access_token": f"access-token-{self.issued}",
                    "refresh_token": rotated,
                },
            )
        return FakeResponse(404, {"error": "not_found"})


@pytest.fixture
def entra() -> EntraFake:
    return EntraFake()


@pytest.fixture
def entra_server(entra: EntraFake, portal_fake_server: Callable[..., FakeServer]) -> FakeServer:
    return portal_fake_server(entra)


@pytest.fixture
def make_provider(entra_server: FakeServer) -> Iterator[Callable[..., MsalTokenProvider]]:
    sessions: list[requests.Session] = []

    class ToTheFake(requests.Session):
        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            url = str(url).replace(FAKE_LOGIN, entra_server.url, 1)
            kwargs.setdefault("timeout", 5)
            return super().request(method, url, *args, **kwargs)

    def make(**options: Any) -> MsalTokenProvider:
        session = ToTheFake()
        sessions.append(session)
        return MsalTokenProvider(
            "app-client-0001",
            SECRET,
            FIRST_REFRESH,
            f"{FAKE_LOGIN}/{PARTNER_TENANT}",
            http_client=session,
            instance_discovery=False,
            **options,
        )

    yield make
    for session in sessions:
        session.close()


def test_msal_exchanges_the_refresh_token_and_keeps_the_rotated_one(
    make_provider: Callable[..., MsalTokenProvider], entra: EntraFake
) -> None:
    rotated: list[str] = []
    provider = make_provider(on_refresh_token=rotated.append)
    assert provider.token() == "access-token-1"
    assert provider.token() == "access-token-1"  # reused while it is fresh
    assert len(entra.exchanges) == 1
    form = entra.exchanges[0]
    assert form["grant_type"] == ["refresh_token"]
    assert form["client_id"] == ["app-client-0001"]
    assert PARTNER_CENTER_SCOPE in form["scope"][0].split()
    assert provider.current_refresh_token == "refresh-token-2-rotated"
    assert rotated == ["refresh-token-2-rotated"]
    # a forced refresh (after a 401) spends the rotated token, not the first one
    assert provider.token(force_refresh=True) == "access-token-2"
    assert entra.exchanges[1]["refresh_token"] == ["refresh-token-2-rotated"]
    assert provider.refreshes == 2


def test_an_expiring_access_token_is_renewed(
    make_provider: Callable[..., MsalTokenProvider],
) -> None:
    now = [1_000_000.0]
    provider = make_provider(clock=lambda: now[0])
    assert provider.token() == "access-token-1"
    now[0] += 3600 - 200  # inside the five-minute margin
    assert provider.token() == "access-token-2"


def test_a_refused_refresh_token_is_a_token_error_without_secrets(
    make_provider: Callable[..., MsalTokenProvider], entra: EntraFake
) -> None:
    entra.valid_refresh.clear()
    provider = make_provider()
    with pytest.raises(TokenError) as refused:
        provider.token()
    assert "invalid_grant" in str(refused.value)
    assert SECRET not in str(refused.value) and FIRST_REFRESH not in str(refused.value)


def test_an_unreachable_authority_is_a_token_error() -> None:
    class Nowhere(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise requests.ConnectionError("no route to the fake")

    provider = MsalTokenProvider(
        "app",
        SECRET,
        FIRST_REFRESH,
        f"{FAKE_LOGIN}/x",
        http_client=Nowhere(),
        instance_discovery=False,
    )
    with pytest.raises(TokenError, match="could not reach"):
        provider.token()


def test_the_adapter_with_msal_tokens_refreshes_after_a_401_and_logs_no_secret(
    make_provider: Callable[..., MsalTokenProvider],
    entra: EntraFake,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakePartnerCenter() as pc_fake:
        tenant = pc_fake.add_customer(mca_accepted=True)
        sub = pc_fake.add_subscription(tenant, "CFQ7TTC0LH18:0001", 5)
        adapter = PartnerCenterProvider(
            PartnerCenterClient(pc_fake.url, make_provider(), timeout=2)
        )
        try:
            assert isinstance(adapter.get_subscription(tenant, sub), Succeeded)
            pc_fake.expire_token("access-token-1")
            assert isinstance(adapter.get_subscription(tenant, sub), Succeeded)
            pc_fake.inject(Fault.unauthorized(), times=2)
            assert isinstance(adapter.get_subscription(tenant, sub), TechnicalFailure)
        finally:
            adapter.close()
        bearer = [r.headers["Authorization"] for r in pc_fake.requests]
    assert bearer == [
        "Bearer access-token-1",
        "Bearer access-token-1",
        "Bearer access-token-2",
        "Bearer access-token-2",
        "Bearer access-token-3",
    ]
    assert entra.issued == 3
    for secret in (
        SECRET,
        FIRST_REFRESH,
        "refresh-token-2-rotated",
        "access-token-1",
        "access-token-2",
    ):
        assert secret not in caplog.text
