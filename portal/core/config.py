"""Configuration: defaults, overridden by ``PORTAL_*`` environment variables.

Every setting has a default that works for the embedded set-up (SQLite under ``instance/``,
mail to the console, rate limits in memory). Production sets the variables listed in the
README's configuration table.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository (portal/core/config.py)
INSTANCE_DIR = ROOT / "instance"

# name -> (default, parser). A parser turns the environment's string into the setting's type.
_BOOL_TRUE = {"1", "true", "yes", "on"}


def _bool(value: str) -> bool:
    return value.strip().lower() in _BOOL_TRUE


def _int(value: str) -> int:
    return int(value)


def _str(value: str) -> str:
    return value


SETTINGS: dict[str, tuple[Any, Any]] = {
    "ENV": ("production", _str),
    "SECRET_KEY": (None, _str),
    "DATABASE_URL": (None, _str),
    "INSECURE_COOKIES": (False, _bool),
    "HTTPS": (False, _bool),
    "SESSION_IDLE_MINUTES": (30, _int),
    "SESSION_ABSOLUTE_HOURS": (12, _int),
    "PASSWORD_RESET_MINUTES": (30, _int),
    "INVITATION_DAYS": (7, _int),
    "MAIL_BACKEND": ("console", _str),
    "MAIL_SERVER": ("127.0.0.1", _str),
    "MAIL_PORT": (25, _int),
    "MAIL_USERNAME": ("", _str),
    "MAIL_PASSWORD": ("", _str),
    "MAIL_USE_TLS": (False, _bool),
    "MAIL_FROM": ("portal@localhost", _str),
    "RATELIMIT_STORAGE_URL": ("memory://", _str),
    "RATELIMIT_LOGIN_IP": ("30 per minute;300 per hour", _str),
    "RATELIMIT_LOGIN_ACCOUNT": ("10 per 5 minutes;100 per hour", _str),
    "RATELIMIT_RESET_IP": ("10 per minute;60 per hour", _str),
    "RATELIMIT_RESET_ACCOUNT": ("5 per hour", _str),
    "RATELIMIT_INVITE": ("30 per hour", _str),
    "THEMES_DIR": ("", _str),
    "BRAND_UPLOADS_DIR": ("", _str),  # "": <instance>/brands; uploaded logos, per partner slug
    "DEFAULT_PARTNER": ("", _str),
    "ARGON2_TIME_COST": (2, _int),
    "ARGON2_MEMORY_KIB": (19456, _int),
    "TRUSTED_PROXIES": (0, _int),
    "PLUGINS": ("", _str),
    "PLUGIN_PATHS": ("", _str),
    "PROVIDER": ("", _str),
    "PAYMENT_GATEWAY": ("", _str),
    "ACCOUNTING_SYSTEM": ("", _str),
    "NOTIFIER": ("", _str),
    "BROKER_URL": ("", _str),
    "TASK_QUEUE": ("portal", _str),
    "OUTBOX_LEASE_SECONDS": (300, _int),
    "OUTBOX_SWEEP_SECONDS": (30, _int),
    "PROVISIONING_MAX_ATTEMPTS": (8, _int),
    "RENEWAL_REMINDER_DAYS": ("30,7", _str),  # days before an annual/triennial term renews
    "PROVIDER_CALL_LIMIT": ("300 per minute", _str),
    "PROVIDER_CALLS_AT_ONCE": (0, _int),
    "PROVIDER_CALL_SLOTS_DIR": ("", _str),
    "SERVICE_TEAM_EMAIL": ("", _str),
    "FINANCE_TEAM_EMAIL": ("", _str),
}

SECRETS = frozenset({"SECRET_KEY", "MAIL_PASSWORD", "DATABASE_URL"})


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each ``PORTAL_<NAME>`` variable over its default, as ``{"PORTAL_<NAME>": value}``."""
    env = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for name, (default, parse) in SETTINGS.items():
        raw = env.get(f"PORTAL_{name}")
        config[f"PORTAL_{name}"] = default if raw is None or raw == "" else parse(raw)
    return config


def finalise(config: dict[str, Any]) -> None:
    """Fill the settings that derive from others; refuse an unsafe production set-up."""
    development = config["PORTAL_ENV"] in {"development", "testing"}
    config["PORTAL_DATABASE_URL"] = database_url(config)
    config["PORTAL_BROKER_URL"] = broker_url(config)
    if not config.get("PORTAL_SECRET_KEY"):
        if not development:
            raise RuntimeError(
                "PORTAL_SECRET_KEY is not set. Set it to a long random value "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')."
            )
        config["PORTAL_SECRET_KEY"] = _development_secret()
    config["SECRET_KEY"] = config["PORTAL_SECRET_KEY"]


def database_url(config: Mapping[str, Any]) -> str:
    """The configured database, or the embedded SQLite file under ``instance/``."""
    configured = config.get("PORTAL_DATABASE_URL")
    if configured:
        return str(configured)
    INSTANCE_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{INSTANCE_DIR / 'portal.sqlite3'}"


def broker_url(config: Mapping[str, Any]) -> str:
    """The configured Celery broker, or a SQLite file beside the database (no server needed)."""
    configured = config.get("PORTAL_BROKER_URL")
    if configured:
        return str(configured)
    INSTANCE_DIR.mkdir(exist_ok=True)
    return f"sqla+sqlite:///{INSTANCE_DIR / 'celery-broker.sqlite3'}"


def _development_secret() -> str:
    """A per-checkout random key so development sessions survive restarts but never ship."""
    INSTANCE_DIR.mkdir(exist_ok=True)
    path = INSTANCE_DIR / "dev-secret-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def public_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings with secrets masked, for display and logs."""
    return {
        key: ("••••••" if key.removeprefix("PORTAL_") in SECRETS and value else value)
        for key, value in config.items()
        if key.startswith("PORTAL_")
    }
