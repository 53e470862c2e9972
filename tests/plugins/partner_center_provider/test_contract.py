"""The Partner Center adapter honours the provider contract, against the fake Partner Center."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from partner_center_provider import PartnerCenterProvider
from partner_center_provider.fake import FakePartnerCenter

from portal.testing.contracts import ProviderContract


class TestPartnerCenterContract(ProviderContract):
    @pytest.fixture
    def adapter(self, make_adapter: Callable[..., PartnerCenterProvider]) -> PartnerCenterProvider:
        return make_adapter()

    @pytest.fixture
    def customer_tenant_id(self, fake: FakePartnerCenter) -> str:
        return fake.add_customer(mca_accepted=True)

    @pytest.fixture
    def subscription_ref(self, fake: FakePartnerCenter, customer_tenant_id: str) -> str:
        return fake.add_subscription(customer_tenant_id, "CONTRACT-OFFER", 5)

    @pytest.fixture
    def rejected_quantity(self, fake: FakePartnerCenter) -> int:
        # sent to the fake, which refuses it (2002): the rejection is Partner Center's own
        return fake.max_quantity + 1
