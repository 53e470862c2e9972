"""The demo provider enabled, answering at once and never failing at random (tests that want
failures set the rates themselves)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest
from flask import Flask

from portal.core.config import ROOT
from portal.integrations.providers import ProviderAdapter
from portal.integrations.registry import integrations

# importable like an installed distribution (make installs it editable; the portal's loader
# puts the folder on sys.path the same way when it is not installed)
if importlib.util.find_spec("demo_provider") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "demo_provider"))

QUIET = {"DELAY_SECONDS": "0", "FAILURE_RATE": "0", "REJECTION_RATE": "0"}


@pytest.fixture
def portal_plugins() -> list[str]:
    return ["demo_provider"]


@pytest.fixture
def demo_settings() -> dict[str, str]:
    return dict(QUIET)


@pytest.fixture
def portal_config(demo_settings: dict[str, str]) -> dict[str, Any]:
    return {"PORTAL_PLUGIN_SETTINGS": {"demo_provider": demo_settings}}


@pytest.fixture
def provider(portal_app: Flask) -> ProviderAdapter:
    return integrations(portal_app).providers.get("demo")
