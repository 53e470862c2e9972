"""B1 (reliability notes §6): the relay SIGKILLed mid-provisioning, 50 randomised trials per
crash point, on PostgreSQL, in seconds rather than minutes.

The relay is a forked child of the test process running :func:`portal.outbox.items.run_item`
for one licence change, as a worker does with the change's message. It is killed with SIGKILL at
the trial's crash point:

- ``before_call``: nothing reached the provider. Either the child kills itself at its first or
  second commit (after the claim, or after "provisioning" was shown) before sending anything, or
  the test process kills it the moment its first request, or its PATCH, arrives at the fake,
  which then does nothing with it;
- ``after_effect``: the fake has carried the PATCH out, our commit has not happened. Either the
  test process kills the child the moment the fake applied the effect (before the answer leaves),
  or the child kills itself at its next commit after the fake's answer, a normal one or a
  connection dropped after the effect (an unknown outcome);
- ``after_commit``: the child kills itself when ``run_item`` has committed and returned, before
  Celery would acknowledge the message. The fake's answer was a normal one (our commit says
  "provisioned, done") or a connection dropped after the effect (our commit says "retry").

Then the relay restarts: time passes (leases and backoffs are over), a fresh child is given the
killed item again (the unacknowledged message redelivered), and one reconcile pass (a sweep plus
a run of whatever is due, until nothing is) brings the rest, such as the subscription's later
change that was waiting for this one. Every trial then checks that the provider applied every
change exactly once (effects per ``MS-RequestId`` at the fake, and no effect under another id),
that every change is provisioned, and that the portal's quantity equals the provider's.

Randomised per trial (``random.Random(seed)``; the seed is printed with any failure and
``B1_SEED`` replays it): the subscription (12, over three customer tenants), the target quantity
(more or fewer seats), whether a later change waits behind the first, and how the crash point is
reached (the ways of reaching it take turns). ``B1_TRIALS`` sets the trials per crash point
(default 50; 10 is the per-commit figure of the notes). The fake closes every connection after
its answer, so no process ever uses a connection another one opened; the test process itself
only provisions a warm-up subscription of its own, so that children start with compiled
statements.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from partner_center_provider.client import ms_request_id
from partner_center_provider.fake import FakePartnerCenter, Fault
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal.core.db import get_database
from portal.features.licences.rules import ChangeState
from portal.outbox.items import run_item
from portal.outbox.models import OutboxState
from portal.testing.fake_server import FakeResponse, RecordedRequest
from tests.reliability.licence_support import (
    FakeTap,
    Requested,
    Seeded,
    Sub,
    analyze,
    changes,
    claimable_ids,
    drain,
    fake_quantity,
    item_of,
    make_app,
    make_time_pass,
    provision_items,
    quantities,
    request_changes,
    seed_customer,
    seed_partner,
)

pytestmark = pytest.mark.postgres

TRIALS = int(os.environ.get("B1_TRIALS") or 50)
SEED = int(os.environ.get("B1_SEED") or random.SystemRandom().randrange(2**32))
CHILD_TIMEOUT = 30.0
MAX_QUANTITY = 60

VARIANTS = {
    "before_call": ("first-commit", "second-commit", "first-request", "patch-arrives"),
    "after_effect": ("at-the-fake", "next-commit", "next-commit-after-drop"),
    "after_commit": ("answered", "dropped"),
}


# -- the relay in a child process -------------------------------------------------------------


class Flags:
    """Bytes in memory shared with forked children (an anonymous shared mapping)."""

    SENT, EFFECT = 0, 1

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 8)

    def set(self, index: int) -> None:
        self._map[index] = 1

    def get(self, index: int) -> bool:
        return self._map[index] == 1

    def reset(self) -> None:
        self._map[:] = bytes(8)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _dead(pid: int) -> bool:
    """Killed (a zombie) or gone; /proc, as the child is ours and not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped meanwhile
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def kill_and_wait(pid: int) -> None:
    """SIGKILL ``pid`` and return once it can run no more code."""
    with contextlib.suppress(ProcessLookupError):  # reaped meanwhile
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not _dead(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} survived SIGKILL")
        time.sleep(0.001)


def fork(app: Flask, body: Callable[[], object]) -> int:
    """Run ``body`` in a forked child (its own database connections); returns its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 0
    try:
        get_database(app).engine.dispose(close=False)  # the parent's connections stay its own
        with app.app_context():
            body()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


def wait_for(pid: int) -> int:
    """The child's wait status, failing the test if it takes longer than CHILD_TIMEOUT."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            kill_and_wait(pid)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not finish in {CHILD_TIMEOUT:.0f}s")
        time.sleep(0.002)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with {os.WEXITSTATUS(status)}"


# -- the set-up --------------------------------------------------------------------------------


@dataclass
class Rig:
    app: Flask
    fake: FakePartnerCenter
    tap: FakeTap
    seeded: Seeded
    flags: Flags = field(default_factory=Flags)


@pytest.fixture(scope="module")
def rig(reliability_db: str) -> Iterator[Rig]:
    fake = FakePartnerCenter(max_quantity=1000).start()
    tap = FakeTap(fake, close_connections=True)
    app = make_app(reliability_db, fake)
    seeded = seed_partner(app)
    warm_up(app, fake, seeded)
    for _ in range(3):
        seed_customer(app, fake, seeded, subscriptions=4, quantity=10)
    analyze(app)
    try:
        yield Rig(app, fake, tap, seeded)
    finally:
        tap.close()
        fake.stop()
        get_database(app).dispose()
    assert not fake.errors, "the fake Partner Center failed:\n" + "\n".join(fake.errors)


def warm_up(app: Flask, fake: FakePartnerCenter, seeded: Seeded) -> None:
    """Provision a few changes of a subscription of its own in the test process, one of them
    through an unknown outcome: the children inherit compiled statements and loaded code rather
    than each building them again. No connection to the fake stays open (the tap closes them).
    """
    (sub,) = seed_customer(app, fake, seeded, subscriptions=1, quantity=10)
    fake.inject(Fault.drop_after_effect(method="PATCH", path=sub.ref))
    request_changes(app, [(sub, 11), (sub, 12)])
    drain(app, seeded.partner_id)
    request_changes(app, [(sub, 13)])
    drain(app, seeded.partner_id)
    seeded.subscriptions.remove(sub)


# -- one trial ---------------------------------------------------------------------------------


@dataclass
class Trial:
    number: int
    point: str
    variant: str
    sub: Sub
    targets: list[int]

    def __str__(self) -> str:
        return (
            f"B1 trial {self.number} (seed {SEED}, replay with B1_SEED={SEED}): crash point "
            f"{self.point} ({self.variant}), subscription {self.sub.id}, targets {self.targets}"
        )


def plan(rng: random.Random, number: int, point: str, rig: Rig) -> Trial:
    sub = rng.choice(rig.seeded.subscriptions)
    current = quantities(rig.app, [sub])[sub.id]
    targets: list[int] = []
    for _ in range(2 if rng.random() < 0.5 else 1):  # a later change waiting behind the first
        previous = targets[-1] if targets else current
        targets.append(rng.choice([q for q in range(1, MAX_QUANTITY + 1) if q != previous]))
    variants = VARIANTS[point]  # each in turn, so that every one runs
    return Trial(number, point, variants[number % len(variants)], sub, targets)


class Armed:
    """The test process's side of the crash point: what the fake does when a request of the
    trial's subscription arrives, and once it has done its work (before the answer leaves)."""

    def __init__(self, rig: Rig, trial: Trial, first: Requested) -> None:
        self.rig, self.trial = rig, trial
        self.request_id = ms_request_id(first.request_id)
        self._pid = 0
        self._pid_known = threading.Event()
        rig.flags.reset()
        rig.tap.before, rig.tap.after = self.before, self.after
        if trial.variant in ("next-commit-after-drop", "dropped"):
            rig.fake.inject(Fault.drop_after_effect(method="PATCH", path=trial.sub.ref))

    def set_pid(self, pid: int) -> None:
        self._pid = pid
        self._pid_known.set()

    def kill_child(self) -> None:
        assert self._pid_known.wait(10), "the child's pid was never set"
        kill_and_wait(self._pid)

    def before(self, request: RecordedRequest) -> FakeResponse | None:
        trial = self.trial
        if trial.sub.ref not in request.path:
            return None
        self.rig.flags.set(Flags.SENT)
        if trial.point != "before_call":
            return None
        # first-commit / second-commit: the child should have died before sending; if it
        # sends anything first, it dies on arrival all the same (still before the call)
        if trial.variant != "patch-arrives" or request.method == "PATCH":
            self.kill_child()
            return FakeResponse(drop=True)  # nothing is done with it
        return None

    def after(self, request: RecordedRequest, response: FakeResponse) -> None:
        trial, flags = self.trial, self.rig.flags
        if trial.sub.ref not in request.path or request.method != "PATCH":
            return
        if self.rig.fake.effects(self.request_id) and not flags.get(Flags.EFFECT):
            flags.set(Flags.EFFECT)  # before the answer leaves
            if trial.variant == "at-the-fake":
                self.kill_child()

    def disarm(self) -> None:
        self.rig.tap.before = self.rig.tap.after = None
        self.rig.fake.clear_faults()


def child_kills_itself(trial: Trial, flags: Flags) -> None:
    """The child's side of the crash point: SQLAlchemy session events of this process only."""
    if trial.variant in ("first-commit", "second-commit"):
        wanted = 1 if trial.variant == "first-commit" else 2
        commits = 0

        def after_nth_commit(session: Session) -> None:
            nonlocal commits
            commits += 1
            if commits >= wanted and not flags.get(Flags.SENT):
                _die()

        event.listen(Session, "after_commit", after_nth_commit)
    elif trial.point == "after_effect" and trial.variant != "at-the-fake":
        event.listen(
            Session, "before_commit", lambda session: _die() if flags.get(Flags.EFFECT) else None
        )


def check_the_crash_point(rig: Rig, trial: Trial, first: Requested, item_id: int) -> None:
    """Right after the kill: the trial died where it was meant to."""
    effects = rig.fake.effects(first.request_id)
    item = next(i for i in provision_items(rig.app, rig.seeded.partner_id) if i.id == item_id)
    change = changes(rig.app, [first.id])[0]
    if trial.point == "before_call":
        assert effects == 0, "the provider applied a change the relay never sent"
        assert item.state is OutboxState.RUNNING, item.state
    elif trial.point == "after_effect":
        assert effects == 1, "the crash point was meant to follow the provider's effect"
        assert item.state is OutboxState.RUNNING, "our commit happened before the kill"
        assert change.state is not ChangeState.PROVISIONED
    else:
        assert effects == 1
        assert item.state is not OutboxState.RUNNING, "the kill came before our commit"
        if trial.variant == "answered":
            assert (item.state, change.state) == (OutboxState.DONE, ChangeState.PROVISIONED)
        else:  # the unknown outcome was committed as a retry
            assert item.state is OutboxState.PENDING, item.state


def run_trial(rig: Rig, trial: Trial) -> None:
    app, fake, partner_id = rig.app, rig.fake, rig.seeded.partner_id
    effects_before = fake.total_effects
    requested = request_changes(app, [(trial.sub, q) for q in trial.targets])
    first = requested[0]
    assert first.state is ChangeState.QUEUED
    assert all(r.state is ChangeState.AWAITING for r in requested[1:])
    item = item_of(provision_items(app, partner_id), first.id)
    assert item is not None

    # the relay, killed at the crash point
    armed = Armed(rig, trial, first)
    item_id = item.id

    def relay() -> None:
        child_kills_itself(trial, rig.flags)
        run_item(app, item_id)
        if trial.point == "after_commit":
            _die()  # it committed and returned; Celery would acknowledge the message now

    try:
        pid = fork(app, relay)
        armed.set_pid(pid)
        status = wait_for(pid)
    finally:
        armed.disarm()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the relay was not killed: it {describe_status(status)}"
    )
    check_the_crash_point(rig, trial, first, item_id)

    # restart: time passes, the killed item's message comes again, then one reconcile pass
    make_time_pass(app, partner_id)
    status = wait_for(fork(app, lambda: run_item(app, item_id)))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe_status(status)
    status = wait_for(fork(app, lambda: drain(app, partner_id)))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe_status(status)
    assert claimable_ids(app, partner_id) == [], "the reconcile pass left work behind"

    # exactly once, and the portal agrees with the provider
    found = changes(app, [r.id for r in requested])
    assert [c.state for c in found] == [ChangeState.PROVISIONED] * len(found), [
        (c.id, c.state.value, c.provider_answer) for c in found
    ]
    for change in found:
        assert fake.effects(change.request_id) == 1, f"change {change.id}: not applied once"
    assert fake.total_effects - effects_before == len(found), "an effect under another id"
    assert quantities(app, [trial.sub])[trial.sub.id] == fake_quantity(fake, trial.sub)
    assert fake_quantity(fake, trial.sub) == trial.targets[-1]
    items = provision_items(app, partner_id)
    assert {i.state for i in items} == {OutboxState.DONE}
    killed_item = item_of(items, first.id)
    assert killed_item is not None
    if trial.point == "after_commit" and trial.variant == "answered":
        assert killed_item.attempts == 1, "work committed as done ran again"


@pytest.mark.parametrize("point", list(VARIANTS))
def test_the_relay_killed_at_a_crash_point_applies_every_change_exactly_once(
    point: str, rig: Rig
) -> None:
    rng = random.Random(f"{SEED}-{point}")
    started = time.monotonic()
    for number in range(1, TRIALS + 1):
        trial = plan(rng, number, point, rig)
        try:
            run_trial(rig, trial)
        except BaseException as failure:
            raise AssertionError(f"{trial}: {failure}") from failure
    elapsed = time.monotonic() - started
    print(f"B1 {point}: {TRIALS} trials in {elapsed:.1f}s (seed {SEED})")
