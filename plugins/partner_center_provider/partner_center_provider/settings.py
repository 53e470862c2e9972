"""The plugin's settings: ``PORTAL_PARTNER_CENTER_*`` environment variables.

Tests override them with ``PORTAL_PLUGIN_SETTINGS={"partner_center": {...}}``. A missing
credential or a malformed value stops the portal at start-up with a
:class:`~portal.integrations.registry.PluginError` naming the variable. The secrets
(``CLIENT_SECRET``, ``REFRESH_TOKEN``) are kept out of ``repr`` and never logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from portal.integrations.registry import PluginError

SETTINGS_NAME = "partner_center"
PREFIX = "PORTAL_PARTNER_CENTER_"

DEFAULT_BASE_URL = "https://api.partnercenter.microsoft.com"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_APPLICATION_NAME = "CSP Portal"
REQUIRED = ("TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class PartnerCenterSettings:
    """Parsed and checked settings. ``tenant_id`` is the partner's own Entra tenant."""

    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    authority_host: str = DEFAULT_AUTHORITY_HOST
    timeout_seconds: float = 10.0
    poll_interval_seconds: float = 2.0
    poll_limit_seconds: float = 30.0
    application_name: str = DEFAULT_APPLICATION_NAME
    # a fixed bearer token instead of Entra ID: only for a fake Partner Center on this machine
    static_token: str | None = field(default=None, repr=False)

    @property
    def authority(self) -> str:
        """The Entra authority of the partner's tenant (``https://login…/<tenant>``)."""
        return f"{self.authority_host}/{self.tenant_id}"

    @classmethod
    def from_settings(cls, raw: Mapping[str, str]) -> PartnerCenterSettings:
        """Check ``raw`` (``plugin_settings(app, "partner_center")``); raise PluginError."""
        values = {k.upper(): str(v).strip() for k, v in raw.items()}
        static_token = values.get("STATIC_TOKEN") or None
        if static_token is not None:
            return cls._local(values, static_token)
        missing = [name for name in REQUIRED if not values.get(name)]
        if missing:
            names = ", ".join(PREFIX + name for name in missing)
            raise PluginError(
                f"partner_center_provider: {names} {'is' if len(missing) == 1 else 'are'} not "
                "set; the plugin needs the partner's tenant id and an App+User app registration "
                "(client id, client secret and a refresh token from an MFA-backed consent). "
                "See plugins/partner_center_provider/README.md."
            )
        return cls(
            tenant_id=values["TENANT_ID"],
            client_id=values["CLIENT_ID"],
            client_secret=values["CLIENT_SECRET"],
            refresh_token=values["REFRESH_TOKEN"],
            base_url=_url(values, "BASE_URL", DEFAULT_BASE_URL),
            authority_host=_url(values, "AUTHORITY_HOST", DEFAULT_AUTHORITY_HOST, https=True),
            timeout_seconds=_seconds(values, "TIMEOUT_SECONDS", 10.0),
            poll_interval_seconds=_seconds(values, "POLL_INTERVAL_SECONDS", 2.0),
            poll_limit_seconds=_seconds(values, "POLL_LIMIT_SECONDS", 30.0, zero_ok=True),
            application_name=values.get("APPLICATION_NAME") or DEFAULT_APPLICATION_NAME,
        )

    @classmethod
    def _local(cls, values: Mapping[str, str], static_token: str) -> PartnerCenterSettings:
        """Settings for a local fake Partner Center (benchmarks, worker tests): no credentials,
        and a base URL on the loopback interface, so the fixed token never leaves the machine."""
        base_url = _url(values, "BASE_URL", DEFAULT_BASE_URL)
        if urlsplit(base_url).hostname not in LOOPBACK_HOSTS:
            raise PluginError(
                f"{PREFIX}STATIC_TOKEN is for a fake Partner Center on 127.0.0.1 only; "
                f"{PREFIX}BASE_URL is {base_url!r}. Use the App+User credentials instead."
            )
        return cls(
            tenant_id=values.get("TENANT_ID") or "local-fake",
            client_id=values.get("CLIENT_ID") or "local-fake",
            client_secret="",
            refresh_token="",
            base_url=base_url,
            timeout_seconds=_seconds(values, "TIMEOUT_SECONDS", 10.0),
            poll_interval_seconds=_seconds(values, "POLL_INTERVAL_SECONDS", 2.0),
            poll_limit_seconds=_seconds(values, "POLL_LIMIT_SECONDS", 30.0, zero_ok=True),
            application_name=values.get("APPLICATION_NAME") or DEFAULT_APPLICATION_NAME,
            static_token=static_token,
        )


def _url(values: Mapping[str, str], name: str, default: str, *, https: bool = False) -> str:
    value = (values.get(name) or default).rstrip("/")
    parts = urlsplit(value)
    loopback = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS and not https
    if not parts.hostname or (parts.scheme != "https" and not loopback):
        allowed = "an https URL" if https else "an https URL (http only for 127.0.0.1)"
        raise PluginError(f"{PREFIX}{name}={value!r} is not {allowed}")
    if parts.query or parts.fragment:
        raise PluginError(f"{PREFIX}{name}={value!r} must not have a query or fragment")
    return value


def _seconds(
    values: Mapping[str, str], name: str, default: float, *, zero_ok: bool = False
) -> float:
    raw = values.get(name)
    if not raw:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        raise PluginError(f"{PREFIX}{name}={raw!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        raise PluginError(f"{PREFIX}{name}={raw!r} must be a positive number of seconds")
    return seconds
