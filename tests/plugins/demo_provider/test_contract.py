"""The demo provider honours the provider contract every adapter must."""

from __future__ import annotations

import pytest

from portal.integrations.providers import ProviderAdapter
from portal.testing.contracts import ProviderContract


class TestDemoProviderContract(ProviderContract):
    @pytest.fixture
    def adapter(self, provider: ProviderAdapter) -> ProviderAdapter:
        return provider
