"""Pacing of calls to a provider, per customer tenant, shared by every worker.

Partner Center throttles per partner and customer tenant and answers ``429`` with
``Retry-After`` (integration-apis §1.3). Workers therefore take a slot from a moving-window
budget (``PORTAL_PROVIDER_CALL_LIMIT``) before each call, and after a ``429`` the whole tenant
pauses for the ``Retry-After`` rather than every queued change trying again and earning another
refusal. The budget lives in ``PORTAL_RATELIMIT_STORAGE_URL`` (the limits library): memory for
one process, Redis for several workers.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta

from flask import Flask
from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

_EXTENSION = "portal_provider_pacing"
_lock = threading.Lock()


class ProviderPacing:
    def __init__(self, storage_url: str, limit: str) -> None:
        storage = storage_from_string(storage_url)
        assert isinstance(storage, Storage), "a synchronous storage"
        self.storage: Storage = storage
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.item: RateLimitItem = parse(limit)

    def wait_before_call(self, provider_key: str, tenant: str, calls: int = 1) -> timedelta | None:
        """Take a slot for each of ``calls`` requests now (all or none); or say how long to wait
        (paused, or budget spent)."""
        paused = self._paused_for(provider_key, tenant)
        if paused:
            return paused
        cost = max(1, min(calls, self.item.amount))  # never more than the whole budget
        if self.limiter.hit(self.item, "provider-call", provider_key, tenant, cost=cost):
            return None
        stats = self.limiter.get_window_stats(self.item, "provider-call", provider_key, tenant)
        return timedelta(seconds=max(stats.reset_time - time.time(), 0.05))

    def pause(self, provider_key: str, tenant: str, for_: timedelta) -> None:
        """The provider said to wait (``Retry-After``): nobody calls for this tenant until then."""
        until_ms = math.ceil((time.time() + for_.total_seconds()) * 1000)
        key = _pause_key(provider_key, tenant)
        # the pause's end (ms since the epoch) is the key's value: the key's own expiry is
        # whole seconds on Redis, too coarse to say when exactly the pause ends
        self.storage.clear(key)
        self.storage.incr(key, max(math.ceil(for_.total_seconds()) + 1, 1), amount=until_ms)

    def _paused_for(self, provider_key: str, tenant: str) -> timedelta | None:
        until_ms = self.storage.get(_pause_key(provider_key, tenant))
        if not until_ms:
            return None
        remaining = until_ms / 1000 - time.time()
        return timedelta(seconds=remaining) if remaining > 0 else None


def _pause_key(provider_key: str, tenant: str) -> str:
    return f"portal-provider-pause/{provider_key}/{tenant}"


def pacing(app: Flask) -> ProviderPacing:
    """The app's pacing, built on first use (the web process never needs it)."""
    found = app.extensions.get(_EXTENSION)
    if found is None:
        with _lock:
            found = app.extensions.get(_EXTENSION)
            if found is None:
                found = ProviderPacing(
                    app.config["PORTAL_RATELIMIT_STORAGE_URL"],
                    app.config["PORTAL_PROVIDER_CALL_LIMIT"],
                )
                app.extensions[_EXTENSION] = found
    assert isinstance(found, ProviderPacing)
    return found
