"""The plugin's settings: ``PORTAL_STRIPE_*`` environment variables.

Tests override them with ``PORTAL_PLUGIN_SETTINGS={"stripe": {...}}``. A missing key or a
malformed value stops the portal at start-up with a
:class:`~portal.integrations.registry.PluginError` naming the variable. The secrets (the secret
key, the webhook signing secrets) are kept out of ``repr`` and never logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from portal.integrations.registry import PluginError

SETTINGS_NAME = "stripe"
PREFIX = "PORTAL_STRIPE_"
DEFAULT_API_BASE = "https://api.stripe.com"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
REQUIRED = ("SECRET_KEY", "WEBHOOK_SECRET")


@dataclass(frozen=True)
class StripeSettings:
    """Parsed and checked settings.

    ``webhook_secrets`` holds one endpoint signing secret, or several while one is being rolled
    (``PORTAL_STRIPE_WEBHOOK_SECRET=whsec_new,whsec_old``): a delivery signed with any of them
    is accepted.
    """

    secret_key: str = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    publishable_key: str = ""
    api_base: str = DEFAULT_API_BASE
    timeout_seconds: float = 20.0
    max_network_retries: int = 2

    @classmethod
    def from_settings(cls, raw: Mapping[str, object]) -> StripeSettings:
        """Check ``raw`` (``plugin_settings(app, "stripe")``); raise PluginError."""
        values = {k.upper(): str(v).strip() for k, v in raw.items() if v is not None}
        missing = [name for name in REQUIRED if not values.get(name)]
        if missing:
            names = ", ".join(PREFIX + name for name in missing)
            raise PluginError(
                f"stripe_payments: {names} {'is' if len(missing) == 1 else 'are'} not set; the "
                "plugin needs the account's secret key (sk_…) and the webhook endpoint's signing "
                "secret (whsec_…). See plugins/stripe_payments/README.md."
            )
        secret_key = values["SECRET_KEY"]
        if not secret_key.startswith(("sk_", "rk_")):
            raise PluginError(f"{PREFIX}SECRET_KEY is not a Stripe secret key (sk_… or rk_…)")
        publishable = values.get("PUBLISHABLE_KEY", "")
        if publishable and not publishable.startswith("pk_"):
            raise PluginError(f"{PREFIX}PUBLISHABLE_KEY is not a publishable key (pk_…)")
        secrets = tuple(s.strip() for s in values["WEBHOOK_SECRET"].split(",") if s.strip())
        if not secrets:
            raise PluginError(f"{PREFIX}WEBHOOK_SECRET names no signing secret")
        return cls(
            secret_key=secret_key,
            webhook_secrets=secrets,
            publishable_key=publishable,
            api_base=_api_base(values.get("API_BASE") or DEFAULT_API_BASE),
            timeout_seconds=_seconds(values.get("TIMEOUT_SECONDS"), 20.0),
            max_network_retries=_retries(values.get("MAX_NETWORK_RETRIES")),
        )


def _api_base(value: str) -> str:
    value = value.rstrip("/")
    parts = urlsplit(value)
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if not parts.hostname or (parts.scheme != "https" and not loopback):
        raise PluginError(
            f"{PREFIX}API_BASE={value!r} is not an https URL (http only for 127.0.0.1)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PluginError(
            f"{PREFIX}API_BASE={value!r} must be a scheme and host only (the SDK adds /v1/…)"
        )
    return value


def _seconds(raw: str | None, default: float) -> float:
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        raise PluginError(f"{PREFIX}TIMEOUT_SECONDS={raw!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise PluginError(f"{PREFIX}TIMEOUT_SECONDS={raw!r} must be a positive number")
    return seconds


def _retries(raw: str | None) -> int:
    if not raw:
        return 2
    if not raw.isdigit() or int(raw) > 10:
        raise PluginError(f"{PREFIX}MAX_NETWORK_RETRIES={raw!r} must be a whole number 0-10")
    return int(raw)
