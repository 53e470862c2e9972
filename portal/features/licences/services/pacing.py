"""Pacing of calls to a provider, per customer tenant, shared by every worker.

Partner Center throttles per partner and customer tenant and answers ``429`` with
``Retry-After`` (integration-apis §1.3). Workers therefore take a slot from a moving-window
budget (``PORTAL_PROVIDER_CALL_LIMIT``) before each call, and after a ``429`` the whole tenant
pauses for the ``Retry-After`` rather than every queued change trying again and earning another
refusal. The budget lives in ``PORTAL_RATELIMIT_STORAGE_URL`` (the limits library): memory for
one process, Redis for several workers.

:func:`call_slot` caps the provider calls in flight at once on one worker host
(``PORTAL_PROVIDER_CALLS_AT_ONCE``; 0, the default, leaves the worker pool's size as the cap).
With a cap, the pool can be a little larger than it: while some processes read, write and
commit around their calls, the others keep every allowed call busy.
"""

from __future__ import annotations

import fcntl
import math
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from limits import RateLimitItem, parse
from limits.storage import RedisStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

_EXTENSION = "portal_provider_pacing"
_SLOTS_EXTENSION = "portal_provider_call_slots"
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
        """The provider said to wait (``Retry-After``): nobody calls for this tenant until then
        (or until a later end another worker was told, whichever is later)."""
        until_ms = math.ceil((time.time() + for_.total_seconds()) * 1000)
        key = _pause_key(provider_key, tenant)
        seconds = max(math.ceil(for_.total_seconds()) + 1, 1)
        # the pause's end (ms since the epoch) is the key's value: the key's own expiry is
        # whole seconds on Redis, too coarse to say when exactly the pause ends. Several
        # workers meet the same 429 wave at once, so the write must be one atomic "keep the
        # later end": a clear then an add let two of them add their ends together (a pause
        # until the 2080s)
        if isinstance(self.storage, RedisStorage):
            connection: Any = self.storage.get_connection()  # a redis-py client
            connection.eval(_KEEP_LATER, 1, self.storage.prefixed_key(key), until_ms, seconds)
            return
        with _lock:  # the other storages are one process's (memory)
            if self.storage.get(key) < until_ms:
                self.storage.clear(key)
                self.storage.incr(key, seconds, amount=until_ms)

    def _paused_for(self, provider_key: str, tenant: str) -> timedelta | None:
        until_ms = self.storage.get(_pause_key(provider_key, tenant))
        if not until_ms:
            return None
        remaining = until_ms / 1000 - time.time()
        return timedelta(seconds=remaining) if remaining > 0 else None


# KEYS[1]: the pause key; ARGV: the pause's end (ms since the epoch), the key's life (s)
_KEEP_LATER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return redis.call('GET', KEYS[1])
"""


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


class CallSlots:
    """At most ``count`` holders at once among every process of this host using ``directory``.

    A holder keeps an exclusive ``flock`` on one of ``count`` slot files. The kernel drops the
    locks of a process that dies (a time limit's SIGKILL, the OOM killer), so a slot is never
    lost with its holder, as it would be with a semaphore. The files are opened per hold: an
    open file inherited across a fork would share its lock with the parent.
    """

    def __init__(self, directory: Path, count: int, poll_seconds: float = 0.002) -> None:
        if count < 1:
            raise ValueError("a call cap needs at least one slot")
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = [directory / f"slot-{number}" for number in range(count)]
        self.poll_seconds = poll_seconds

    @contextmanager
    def hold(self) -> Iterator[int]:
        """Wait for a free slot and hold it for the ``with`` block; yields its number."""
        number, fd = self._take()
        try:
            yield number
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _take(self) -> tuple[int, int]:
        start = random.randrange(len(self.paths))  # spreads the holders; protects nothing
        while True:
            for offset in range(len(self.paths)):
                number = (start + offset) % len(self.paths)
                fd = os.open(self.paths[number], os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return number, fd
            time.sleep(self.poll_seconds)


def call_slot(app: Flask) -> AbstractContextManager[object]:
    """Hold one of the host's ``PORTAL_PROVIDER_CALLS_AT_ONCE`` provider-call slots for a
    ``with`` block (no cap when the setting is 0)."""
    count = int(app.config.get("PORTAL_PROVIDER_CALLS_AT_ONCE") or 0)
    if count < 0:
        raise ValueError(f"PORTAL_PROVIDER_CALLS_AT_ONCE must be 0 (no cap) or more, not {count}")
    if count == 0:
        return nullcontext()
    slots = app.extensions.get(_SLOTS_EXTENSION)
    if slots is None:
        from portal.core.config import INSTANCE_DIR

        configured = app.config.get("PORTAL_PROVIDER_CALL_SLOTS_DIR") or ""
        directory = Path(configured) if configured else INSTANCE_DIR / "provider-call-slots"
        slots = CallSlots(directory, count)
        app.extensions[_SLOTS_EXTENSION] = slots
    assert isinstance(slots, CallSlots)
    return slots.hold()
