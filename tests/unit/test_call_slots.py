"""The host's cap on provider calls at once (``PORTAL_PROVIDER_CALLS_AT_ONCE``): never more
holders than slots across processes, and a slot comes back when its holder is killed."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.features.licences.services.pacing import CallSlots, call_slot

HOLD_SECONDS = 0.3
_fork = multiprocessing.get_context("fork")


def _hold_once(directory: Path, count: int, start: Any, spans: Any) -> None:
    start.wait()
    with CallSlots(directory, count).hold():
        began = time.monotonic()
        time.sleep(HOLD_SECONDS)
        spans.put((began, time.monotonic()))


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_no_more_processes_than_slots_hold_one_at_once(tmp_path: Path) -> None:
    start, spans = _fork.Event(), _fork.Queue()
    processes = [
        _fork.Process(target=_hold_once, args=(tmp_path, 2, start, spans)) for _ in range(6)
    ]
    for process in processes:
        process.start()
    start.set()
    held = [spans.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    assert most_at_once(held) == 2  # two at a time, and never three


def _hold_until_killed(directory: Path, holding: Any) -> None:
    with CallSlots(directory, 1).hold():
        holding.set()
        time.sleep(60)


def test_a_slot_held_by_a_killed_process_is_free_again(tmp_path: Path) -> None:
    holding = _fork.Event()
    holder = _fork.Process(target=_hold_until_killed, args=(tmp_path, holding))
    holder.start()
    assert holding.wait(timeout=30)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(_take_and_release(tmp_path)))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive(), "the slot was taken while its holder was alive"
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=10)
    waiter.join(timeout=10)
    assert got == [0]


def _take_and_release(directory: Path) -> int:
    with CallSlots(directory, 1).hold() as number:
        return number


def test_without_a_cap_nothing_is_held(tmp_path: Path) -> None:
    app = Flask("capless")
    app.config.update(
        PORTAL_PROVIDER_CALLS_AT_ONCE=0, PORTAL_PROVIDER_CALL_SLOTS_DIR=str(tmp_path / "slots")
    )
    with call_slot(app):
        pass
    assert not (tmp_path / "slots").exists()


def test_a_negative_cap_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    app = Flask("bad")
    app.config.update(PORTAL_PROVIDER_CALLS_AT_ONCE=-1)
    with pytest.raises(ValueError, match="PORTAL_PROVIDER_CALLS_AT_ONCE"):
        call_slot(app)
