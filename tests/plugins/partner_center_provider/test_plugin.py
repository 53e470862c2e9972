"""The plugin in the portal: loading, settings checked at start-up, the registered adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from partner_center_provider import MsalTokenProvider, PartnerCenterProvider, PartnerCenterSettings

from portal import create_app
from portal.integrations.providers import ProviderAdapter
from portal.integrations.registry import PluginError, integrations
from portal.plugins import plugin_infos
from portal.testing.support import app_config, private_portal_imports

PLUGIN = "partner_center_provider"
PACKAGE = Path(__file__).resolve().parents[3] / "plugins" / PLUGIN / PLUGIN
GOOD = {
    "TENANT_ID": "partner-tenant-0001",
    "CLIENT_ID": "app-client-0001",
    "CLIENT_SECRET": "client-secret-do-not-log",
    "REFRESH_TOKEN": "refresh-token-do-not-log",
}


@pytest.fixture
def portal_plugins() -> list[str]:
    return [PLUGIN]


@pytest.fixture
def portal_config() -> dict[str, Any]:
    settings = {
        **GOOD,
        "BASE_URL": "http://127.0.0.1:9/",
        "TIMEOUT_SECONDS": "3.5",
        "POLL_INTERVAL_SECONDS": "1",
        "POLL_LIMIT_SECONDS": "20",
        "APPLICATION_NAME": "Contoso Cloud Portal",
    }
    return {"PORTAL_PLUGIN_SETTINGS": {"partner_center": settings}}


def build(tmp_path: Path, settings: dict[str, str]) -> Flask:
    config = app_config(
        f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        [PLUGIN],
        PORTAL_PLUGIN_SETTINGS={"partner_center": settings},
    )
    return create_app(config)


def test_the_plugin_registers_the_partner_center_provider(portal_app: Flask) -> None:
    registry = integrations(portal_app).providers
    assert "partner_center" in registry
    assert registry.owners["partner_center"] == PLUGIN
    adapter = registry.get("partner_center")
    assert isinstance(adapter, ProviderAdapter) and isinstance(adapter, PartnerCenterProvider)
    assert adapter.display_name == "Microsoft Partner Center"
    assert adapter.client.base_url == "http://127.0.0.1:9"
    assert adapter.client.timeout == 3.5
    assert (adapter.poll_interval, adapter.poll_limit) == (1.0, 20.0)
    assert isinstance(adapter.client.tokens, MsalTokenProvider)
    info = plugin_infos(portal_app)[PLUGIN]
    assert "portal_register_providers" in info.hooks
    assert info.version == "0.1.0"


@pytest.mark.parametrize("missing", ["TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN"])
def test_a_missing_credential_stops_the_start_naming_the_variable(
    tmp_path: Path, missing: str
) -> None:
    settings = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(PluginError) as stopped:
        build(tmp_path, settings)
    assert f"PORTAL_PARTNER_CENTER_{missing}" in str(stopped.value)
    for secret in ("client-secret-do-not-log", "refresh-token-do-not-log"):
        assert secret not in str(stopped.value)


def test_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in GOOD.items():
        monkeypatch.setenv(f"PORTAL_PARTNER_CENTER_{name}", value)
    monkeypatch.setenv("PORTAL_PARTNER_CENTER_TIMEOUT_SECONDS", "7")
    app = build(tmp_path, {})
    adapter = integrations(app).providers.get("partner_center")
    assert isinstance(adapter, PartnerCenterProvider)
    assert adapter.client.base_url == "https://api.partnercenter.microsoft.com"
    assert adapter.client.timeout == 7.0
    monkeypatch.delenv("PORTAL_PARTNER_CENTER_CLIENT_ID")
    with pytest.raises(PluginError, match="PORTAL_PARTNER_CENTER_CLIENT_ID"):
        build(tmp_path, {})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIMEOUT_SECONDS", "soon"),
        ("TIMEOUT_SECONDS", "0"),
        ("POLL_INTERVAL_SECONDS", "-1"),
        ("POLL_LIMIT_SECONDS", "nan"),
        ("BASE_URL", "http://api.partnercenter.microsoft.com"),  # http only for 127.0.0.1
        ("BASE_URL", "not a url"),
        ("AUTHORITY_HOST", "http://127.0.0.1:9"),
    ],
)
def test_a_malformed_setting_stops_the_start_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(PluginError, match=f"PORTAL_PARTNER_CENTER_{name}"):
        build(tmp_path, {**GOOD, name: value})


def test_a_static_token_serves_a_local_fake_without_credentials(tmp_path: Path) -> None:
    from partner_center_provider.fake import FakePartnerCenter

    with FakePartnerCenter() as fake:
        tenant = fake.add_customer()
        ref = fake.add_subscription(tenant, "CFQ7TTC0LH18:0001", 3)
        app = build(tmp_path, {"BASE_URL": fake.url, "STATIC_TOKEN": "local-token-1"})
        adapter = integrations(app).providers.get("partner_center")
        assert isinstance(adapter, PartnerCenterProvider)
        assert "local-token-1" not in repr(adapter.client)
        read = adapter.get_subscription(tenant, ref)
        assert read.value.quantity == 3  # type: ignore[union-attr]
        [call] = fake.requests
        assert call.headers["Authorization"] == "Bearer local-token-1"


def test_a_static_token_is_refused_for_the_real_partner_center(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="STATIC_TOKEN is for a fake Partner Center"):
        build(tmp_path, {"STATIC_TOKEN": "local-token-1"})
    with pytest.raises(PluginError, match="STATIC_TOKEN is for a fake Partner Center"):
        build(tmp_path, {**GOOD, "STATIC_TOKEN": "x", "BASE_URL": "https://pc.example.com"})


def test_the_defaults(tmp_path: Path) -> None:
    settings = PartnerCenterSettings.from_settings(GOOD)
    assert settings.base_url == "https://api.partnercenter.microsoft.com"
    assert settings.authority == "https://login.microsoftonline.com/partner-tenant-0001"
    assert (settings.timeout_seconds, settings.poll_interval_seconds) == (10.0, 2.0)
    assert settings.poll_limit_seconds == 30.0
    assert settings.application_name == "CSP Portal"
    shown = repr(settings) + repr(MsalTokenProvider.from_settings(settings))
    assert "client-secret-do-not-log" not in shown and "refresh-token-do-not-log" not in shown


def test_the_plugin_imports_only_the_portals_public_surface() -> None:
    # the fake Partner Center is built on the test kit's FakeServer (portal.testing is public)
    assert private_portal_imports(PACKAGE) == []
