"""Rate limits: views declare theirs with :func:`rate_limited`, naming the setting that holds the
rate; :func:`init_rate_limits` wraps every such view with a limiter made for the app.

Flask-Limiter keeps its storage and key prefix on the instance, so each app gets its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from flask_limiter import Limiter

RATE_LIMITS_ATTR = "portal_rate_limits"
F = TypeVar("F", bound=Callable[..., Any])


def client_ip() -> str:
    # ProxyFix (PORTAL_TRUSTED_PROXIES) has already put the client's address here.
    return request.remote_addr or "unknown"


def account_key() -> str:
    """The account named in the submitted form, hashed (no email addresses in the limiter)."""
    email = request.form.get("email", "").strip().lower()
    brand = g.get("brand")
    digest = hashlib.sha256(f"{brand.id if brand else 0}:{email}".encode()).hexdigest()[:32]
    return f"account:{digest}"


KEY_FUNCTIONS: dict[str, Callable[[], str]] = {"ip": client_ip, "account": account_key}


@dataclass(frozen=True)
class RateLimit:
    setting: str
    per: str = "ip"
    methods: tuple[str, ...] | None = None


def rate_limited(
    setting: str, per: str = "ip", methods: tuple[str, ...] | None = None
) -> Callable[[F], F]:
    """Limit a view to the rate in config ``setting``, counted per client address or account."""
    if per not in KEY_FUNCTIONS:
        raise ValueError(f"unknown rate-limit key {per!r}")

    def decorator(view: F) -> F:
        limits = [*getattr(view, RATE_LIMITS_ATTR, ()), RateLimit(setting, per, methods)]
        setattr(view, RATE_LIMITS_ATTR, limits)
        return view

    return decorator


def init_rate_limits(app: Flask) -> Limiter:
    """A limiter for this app, wrapped around every view that declared limits."""
    limiter = Limiter(
        key_func=client_ip,
        app=app,
        storage_uri=app.config["PORTAL_RATELIMIT_STORAGE_URL"],
        key_prefix=app.config.get("RATELIMIT_KEY_PREFIX", "portal"),
        headers_enabled=True,
    )
    from portal.web.access import is_machine_request

    # a signed machine-to-machine route has no limits of its own: skip the limiter's per-request
    # bookkeeping for it (its caller is authenticated by the view, before anything is written)
    limiter.request_filter(is_machine_request)
    for endpoint, view in list(app.view_functions.items()):
        limited: Any = view
        for spec in getattr(view, RATE_LIMITS_ATTR, ()):
            limited = limiter.limit(
                _rate_from(spec.setting),
                key_func=KEY_FUNCTIONS[spec.per],
                methods=list(spec.methods) if spec.methods else None,
            )(limited)
        app.view_functions[endpoint] = limited
    app.extensions["portal_limiter"] = limiter
    return limiter


def _rate_from(setting: str) -> Callable[[], str]:
    return lambda: str(current_app.config[setting])
