"""The Partner Center adapter's real HTTP client against the fake Partner Center on 127.0.0.1.

Nothing is mocked: every test drives ``PartnerCenterProvider`` over HTTP to
``partner_center_provider.fake.FakePartnerCenter``, with a ``StaticTokenProvider`` (the msal
path has its own test against a local token endpoint).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from portal.core.config import ROOT

# importable like an installed distribution (make installs it editable; the portal's loader
# puts the folder on sys.path the same way when it is not installed)
if importlib.util.find_spec("partner_center_provider") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "partner_center_provider"))

from partner_center_provider import (
    PartnerCenterClient,
    PartnerCenterProvider,
    StaticTokenProvider,
)
from partner_center_provider.fake import FakePartnerCenter

OFFER = "CFQ7TTC0LH18:0001"
TOKENS = ("pc-token-first-4f1c", "pc-token-second-9a7e", "pc-token-third-33b0")
# short waits: the client gives up after TIMEOUT, polls a 202 every POLL_INTERVAL up to POLL_LIMIT
TIMEOUT = 0.5
POLL_INTERVAL = 0.05
POLL_LIMIT = 0.6


@pytest.fixture
def fake() -> Iterator[FakePartnerCenter]:
    with FakePartnerCenter() as server:
        yield server
    assert not server.errors, "the fake Partner Center failed:\n" + "\n".join(server.errors)


@pytest.fixture
def tokens() -> StaticTokenProvider:
    return StaticTokenProvider(TOKENS)


@pytest.fixture
def make_adapter(
    fake: FakePartnerCenter, tokens: StaticTokenProvider
) -> Iterator[Callable[..., PartnerCenterProvider]]:
    made: list[PartnerCenterProvider] = []

    def make(
        base_url: str | None = None, *, timeout: float = TIMEOUT, **options: Any
    ) -> PartnerCenterProvider:
        client = PartnerCenterClient(base_url or fake.url, tokens, timeout=timeout)
        options.setdefault("poll_interval", POLL_INTERVAL)
        options.setdefault("poll_limit", POLL_LIMIT)
        adapter = PartnerCenterProvider(client, **options)
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


@pytest.fixture
def pc(make_adapter: Callable[..., PartnerCenterProvider]) -> PartnerCenterProvider:
    """The adapter, pointed at the fake."""
    return make_adapter()


@pytest.fixture
def tenant(fake: FakePartnerCenter) -> str:
    """A customer who accepted the Microsoft Customer Agreement."""
    return fake.add_customer(mca_accepted=True)


@pytest.fixture
def subscription(fake: FakePartnerCenter, tenant: str) -> str:
    """Five seats bought just now (all five may still be reduced)."""
    return fake.add_subscription(tenant, OFFER, 5)
