"""Microsoft Partner Center licence provider for CSP Portal (adapter key ``partner_center``).

Enable it with ``PORTAL_PLUGINS=partner_center_provider`` and choose it with
``PORTAL_PROVIDER=partner_center`` (or per partner / customer). Settings are
``PORTAL_PARTNER_CENTER_*`` (see :mod:`partner_center_provider.settings` and the README):
``TENANT_ID``, ``CLIENT_ID``, ``CLIENT_SECRET`` and ``REFRESH_TOKEN`` are required.

:mod:`partner_center_provider.fake` is a local Partner Center for tests and benchmarks.
"""

from __future__ import annotations

from flask import Flask

from partner_center_provider.adapter import PartnerCenterProvider
from partner_center_provider.auth import MsalTokenProvider, StaticTokenProvider, TokenProvider
from partner_center_provider.client import PartnerCenterClient, ms_request_id
from partner_center_provider.settings import SETTINGS_NAME, PartnerCenterSettings
from portal.hookspecs import hookimpl
from portal.integrations.providers import ProviderAdapter
from portal.plugins import plugin_settings

__version__ = "0.1.0"
__all__ = [
    "MsalTokenProvider",
    "PartnerCenterClient",
    "PartnerCenterProvider",
    "PartnerCenterSettings",
    "StaticTokenProvider",
    "TokenProvider",
    "ms_request_id",
]


@hookimpl
def portal_register_providers(app: Flask) -> list[ProviderAdapter]:
    settings = PartnerCenterSettings.from_settings(plugin_settings(app, SETTINGS_NAME))
    return [PartnerCenterProvider.from_settings(settings)]
