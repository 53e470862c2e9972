"""Demo licence provider for CSP Portal: subscriptions in the portal's own database, realistic
delays, technical failures and business rejections, and no credentials.

Enable it with ``PORTAL_PLUGINS=demo_provider`` and choose it with ``PORTAL_PROVIDER=demo``.
Settings (environment): ``PORTAL_DEMO_PROVIDER_DELAY_SECONDS`` (2),
``PORTAL_DEMO_PROVIDER_FAILURE_RATE`` (0.1), ``PORTAL_DEMO_PROVIDER_REJECTION_RATE`` (0.05),
``PORTAL_DEMO_PROVIDER_RETRY_AFTER_SECONDS`` (5).
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from demo_provider.adapter import DemoProvider, DemoProviderSettings
from portal.core.db import get_database
from portal.hookspecs import hookimpl
from portal.integrations.providers import ProviderAdapter
from portal.plugins import plugin_settings

__version__ = "0.1.0"
__all__ = ["DemoProvider", "DemoProviderSettings"]

NAME = "demo_provider"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@hookimpl
def portal_register_providers(app: Flask) -> list[ProviderAdapter]:
    settings = DemoProviderSettings.from_settings(plugin_settings(app, NAME))
    return [DemoProvider(get_database(app).engine, settings)]


@hookimpl
def portal_migration_locations() -> str:
    return str(MIGRATIONS)
