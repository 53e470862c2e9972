"""B2 (reliability notes §6): the provider fault matrix as a Hypothesis stateful test.

Each example is a fresh customer set-up (three subscriptions: two in one customer tenant, one in
another, so a tenant's pause after a ``429`` meets a neighbour) driven by these rules:

- ``request``: the customer asks for a new quantity (more or fewer seats), through the use case
  (while fewer than :data:`OPEN_LIMIT` changes are open);
- ``run`` / ``run_most_overdue``: the relay runs one subscription's next outbox item in this
  process, as a worker does with its message (:func:`portal.outbox.items.run_item`, against the
  Partner Center fake at latency 0; the subscription's next change may run in the same call).
  One run in five (20 %; which ones, and the order of the faults, drawn per example) meets a
  fault injected at the fake for that subscription, each kind in turn: ``429`` with
  ``Retry-After`` (2 s on any call, 57 s on the PATCH), ``500``, ``503`` with ``Retry-After``, a
  timeout with and without the effect, a connection dropped before and after the effect,
  ``401`` once (the client refreshes its token and sends the same call again, in the same
  run) and twice, and the business refusals ``400``/2002, ``403``/20002 and ``409``/800011.

Time is simulated with time-machine: a run whose item is not due yet moves the clock to the
item's ``available_at`` (never earlier), so Retry-After pauses and backoffs cost nothing.

Checked after every step (invariants), after every run, and at the end of every example once
the relay has run everything left without faults:

- **0 duplicated**: the fake counts at most one effect per ``MS-RequestId``; every PATCH carries
  the request id of a change of this example (never a new id); no effect under another id;
- **0 lost**: every change is provisioned, rejected, failed (retries exhausted: for staff),
  still on its way with a pending outbox item, or waiting behind an earlier change that holds it
  back; at the end nothing is on its way and the portal's quantity equals the fake's;
- **business rejections are final**: rejected in the run that met the refusal, with the
  provider's code and reason on the change (the subscription page showing it is checked in
  ``tests/integration/test_licence_guarantees.py``), and never sent again;
- **unknown outcomes are resolved by reading back**: once a timeout or a dropped connection
  had an effect, the change is provisioned without another PATCH (so never a second effect);
- **Retry-After is honoured**: after a ``429`` (or ``503``) with ``Retry-After``, the item's next
  ``available_at`` is never earlier than the answer plus Retry-After, and at most 10 % later
  (checked by the machine on every retry it meets, and deterministically, after a first and a
  second attempt, by :func:`test_a_429_is_retried_within_ten_percent_of_its_retry_after`).

``B2_OPERATIONS`` (rule steps over all examples; default :data:`DEFAULT_OPERATIONS`, which takes
about 75 s on PostgreSQL on the 2-core CI machine; the notes' per-commit figure is 1,000 and
their target 10,000, about 6 minutes) and ``B2_STEPS`` (steps per example) size the run. The
realised numbers (operations, runs, faults met per kind, checks) are printed.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from partner_center_provider.client import ms_request_id
from partner_center_provider.fake import FakePartnerCenter, Fault

from portal.core.db import get_database, utcnow
from portal.features.licences.models import LicenceChange
from portal.features.licences.rules import HOLDING_STATES, ChangeState
from portal.features.licences.services.subscriptions import PROVISION_KIND
from portal.outbox.items import run_item
from portal.outbox.models import OutboxItem, OutboxState
from tests.reliability.licence_support import (
    FakeTap,
    Requested,
    Seeded,
    Sub,
    analyze,
    fake_quantity,
    make_app,
    quantities,
    request_changes,
    seed_customers,
    seed_partner,
)

pytestmark = pytest.mark.postgres

DEFAULT_OPERATIONS = 2000
OPERATIONS = int(os.environ.get("B2_OPERATIONS") or DEFAULT_OPERATIONS)
STEPS = int(os.environ.get("B2_STEPS") or 40)
TYPICAL_STEPS = 10  # operations per example, as Hypothesis draws them
MAX_BATCHES = 10
MAX_QUANTITY = 40
OPEN_LIMIT = 4  # changes on their way or waiting, over the three subscriptions
CLIENT_TIMEOUT = 0.3  # seconds; a timeout fault answers later than this
LATE = 0.5
DRAIN_ROUNDS = 60


# -- the faults --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultSpec:
    """One fault of the matrix, for the subscription at ``path``."""

    name: str
    build: Callable[[str], list[Fault]]
    retry_after: float | None = None  # checked against the item's next available_at
    business: tuple[int, str, str] | None = None  # status, code, description
    effect_unknown: bool = False  # the effect happened, the answer was lost
    recovered_at_once: bool = False  # the client gets over it within the same run

    def faults(self, path: str) -> list[Fault]:
        return self.build(path)


def _business(status: int, code: int, description: str) -> FaultSpec:
    return FaultSpec(
        f"{status}/{code}",
        lambda p: [Fault.business(status, code, description, method="PATCH", path=p)],
        business=(status, str(code), description),
    )


FAULTS = [
    FaultSpec(
        "429 (Retry-After 2)", lambda p: [Fault.throttle(2, path=p)], retry_after=2
    ),  # the first call, whichever it is
    FaultSpec(
        "429 on PATCH (Retry-After 57)",
        lambda p: [Fault.throttle(57, method="PATCH", path=p)],
        retry_after=57,
    ),
    FaultSpec("500", lambda p: [Fault.server_error(500, path=p)]),
    FaultSpec(
        "503 (Retry-After 5)",
        lambda p: [Fault.server_error(503, retry_after=5, method="PATCH", path=p)],
        retry_after=5,
    ),
    FaultSpec(
        "timeout after the effect",
        lambda p: [Fault.timeout(LATE, effect=True, method="PATCH", path=p)],
        effect_unknown=True,
    ),
    FaultSpec(
        "timeout, no effect",
        lambda p: [Fault.timeout(LATE, effect=False, method="PATCH", path=p)],
    ),
    FaultSpec(
        "dropped after the effect",
        lambda p: [Fault.drop_after_effect(method="PATCH", path=p)],
        effect_unknown=True,
    ),
    FaultSpec("dropped, no effect", lambda p: [Fault.drop_before_effect(path=p)]),
    FaultSpec("401 once", lambda p: [Fault.unauthorized(path=p)], recovered_at_once=True),
    FaultSpec("401 twice", lambda p: [Fault.unauthorized(path=p), Fault.unauthorized(path=p)]),
    _business(400, 2002, "Subscription quantity is not within the allowed range for this offer."),
    _business(403, 20002, "The partner has no commerce relationship with this customer."),
    _business(409, 800011, "The subscription was converted and cannot be changed any more."),
]
FAULT_EVERY = 5  # one run in five meets a fault: 20 %


# -- the set-up --------------------------------------------------------------------------------


@dataclass
class Stats:
    steps: int = 0
    runs: int = 0
    requests: int = 0
    examples: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    met: Counter[str] = field(default_factory=Counter)
    retry_after_checked: int = 0
    rejections: int = 0
    unknown_resolved: int = 0
    failed: int = 0
    late: list[str] = field(default_factory=list)  # retried more than 10 % after Retry-After
    spurious: int = 0  # runs whose check was skipped: an answer outlived the client's timeout


@dataclass
class Rig:
    app: Flask
    fake: FakePartnerCenter
    tap: FakeTap
    seeded: Seeded
    pool: list[list[list[Sub]]] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)

    def fresh(self) -> list[Sub]:
        """Three subscriptions nobody used: two of one tenant, one of another."""
        if not self.pool:
            made = seed_customers(self.app, self.fake, self.seeded, [2, 1] * 25)
            analyze(self.app)
            self.pool = [made[i : i + 2] for i in range(0, len(made), 2)]
        first, second = self.pool.pop()
        return [*first, *second]


@pytest.fixture(scope="module")
def rig(reliability_db: str) -> Iterator[Rig]:
    fake = FakePartnerCenter(max_quantity=1000).start()
    tap = FakeTap(fake)
    app = make_app(reliability_db, fake, timeout_seconds=CLIENT_TIMEOUT, max_attempts=8)
    try:
        yield Rig(app, fake, tap, seed_partner(app))
    finally:
        tap.close()
        fake.stop()
        get_database(app).dispose()
    assert not fake.errors, "the fake Partner Center failed:\n" + "\n".join(fake.errors)


# -- the state machine -------------------------------------------------------------------------


class FaultMatrix(RuleBasedStateMachine):
    rig: ClassVar[Rig]
    # one simulated clock for the whole test, started and stopped around it by the test
    # function: a clock started per machine leaked whenever Hypothesis made a machine it never
    # tore down, and a later module then ran on a time hours ahead, or behind
    clock: ClassVar[Any]

    def __init__(self) -> None:
        super().__init__()
        self.subs: list[Sub] = []
        self.changes: dict[int, list[Requested]] = {}
        self.rejected: set[str] = set()  # request ids
        # request id: its PATCHes so far, and why no more may come (rejected, or its effect
        # is known from an unknown outcome: reading back must settle it)
        self.sent_no_more: dict[str, tuple[int, str]] = {}
        self.refusals: dict[str, tuple[int, str, str]] = {}  # request id: business fault met
        self.effect_unknown: set[str] = set()
        self.open: dict[int, int] = {}  # subscription id: changes not settled yet
        self.snapshot: tuple[list[LicenceChange], list[OutboxItem]] | None = None
        self.effects_before = 0
        self.tap_start = 0
        self.phase = 0
        self.order: list[FaultSpec] = list(FAULTS)
        self.runs_done = 0
        self.faults_done = 0

    @initialize(seed=st.integers(0, 2**32 - 1))
    def set_up(self, seed: int) -> None:
        """Fresh subscriptions; ``seed`` picks which runs meet a fault (one in five) and the
        order of the faults (each in turn)."""
        rig = self.rig
        rng = random.Random(seed)
        self.phase = rng.randrange(FAULT_EVERY)
        self.order = rng.sample(FAULTS, len(FAULTS))
        rig.stats.examples += 1
        self.subs = rig.fresh()
        self.changes = {sub.id: [] for sub in self.subs}
        self.open = {sub.id: 0 for sub in self.subs}
        self.effects_before = rig.fake.total_effects
        self.tap_start = rig.tap.count()

    # -- helpers ----------------------------------------------------------------------------

    def request_ids(self) -> dict[str, Requested]:
        return {
            ms_request_id(change.request_id): change
            for made in self.changes.values()
            for change in made
        }

    def sub_of(self, change_id: int) -> Sub:
        for sub in self.subs:
            if any(change.id == change_id for change in self.changes[sub.id]):
                return sub
        raise AssertionError(f"change {change_id} is not one of this example's")

    def load(self) -> tuple[list[LicenceChange], list[OutboxItem]]:
        """The example's changes and their items still to run; the last read is kept until
        a rule runs (invariants and the next rule see the same database)."""
        if self.snapshot is None:
            self.snapshot = self._read()
        return self.snapshot

    def _read(self) -> tuple[list[LicenceChange], list[OutboxItem]]:
        ids = [change.id for made in self.changes.values() for change in made]
        with get_database(self.rig.app).sessions() as s:
            found = list(
                s.scalars(
                    sa.select(LicenceChange)
                    .where(LicenceChange.id.in_(ids))
                    .order_by(LicenceChange.subscription_id, LicenceChange.sequence)
                )
            )
            items = list(
                s.scalars(
                    sa.select(OutboxItem).where(
                        OutboxItem.partner_id == self.rig.seeded.partner_id,
                        OutboxItem.kind == PROVISION_KIND,
                        OutboxItem.state.in_((OutboxState.PENDING, OutboxState.RUNNING)),
                    )
                )
            )
        ours = set(ids)
        return found, [i for i in items if int(str(i.payload["change_id"])) in ours]

    def live_item(self, sub: Sub) -> OutboxItem | None:
        """The subscription's outbox item still to run (at most one: changes go in order)."""
        _, items = self.load()
        mine = [i for i in items if self.sub_of(int(str(i.payload["change_id"]))) == sub]
        assert len(mine) <= 1, f"two provisioning items at once for subscription {sub.id}"
        return mine[0] if mine else None

    def patches(self, rid: str) -> int:
        return sum(
            1
            for a in self.rig.tap.answers(self.tap_start)
            if a.method == "PATCH" and a.request_id == rid
        )

    def state_of(self, change_id: int) -> ChangeState:
        found, _ = self.load()
        return next(c.state for c in found if c.id == change_id)

    def target_of(self, sub: Sub) -> int:
        """The quantity the customer will have once what is on its way is done."""
        found, _ = self.load()
        holding = [c for c in found if c.subscription_id == sub.id and c.state in HOLDING_STATES]
        return holding[-1].quantity_to if holding else quantities(self.rig.app, [sub])[sub.id]

    def run_now(self, item: OutboxItem) -> str:
        """Run the item, moving the clock to when it is due (never before)."""
        due = item.available_at + timedelta(milliseconds=5)
        if due > utcnow():
            self.clock.move_to(due)
        self.snapshot = None
        with self.rig.app.app_context():
            return run_item(self.rig.app, item.id)

    # -- rules ------------------------------------------------------------------------------

    # No preconditions: whether a change is still open depends on the machine's timing (an
    # answer later than the client's timeout), and a precondition that differs when Hypothesis
    # replays an example makes it give up (FlakyStrategyDefinition). A rule with nothing to
    # do is a no-op instead.

    @rule(which=st.integers(0, 2), quantity=st.integers(1, MAX_QUANTITY))
    def request(self, which: int, quantity: int) -> None:
        """The customer asks for a new quantity (while fewer than OPEN_LIMIT are open)."""
        if sum(self.open.values()) >= OPEN_LIMIT:
            return
        self.rig.stats.steps += 1
        sub = self.subs[which]
        if quantity == self.target_of(sub):  # refused as "unchanged"; not what is tested here
            quantity = quantity + 1 if quantity < MAX_QUANTITY else quantity - 1
        (made,) = request_changes(self.rig.app, [(sub, quantity)])
        self.snapshot = None
        self.changes[sub.id].append(made)
        self.open[sub.id] += 1
        self.rig.stats.requests += 1

    @rule(which=st.integers(0, 2))
    def run(self, which: int) -> None:
        """A worker takes the message of one subscription's change."""
        busy = [sub for sub in self.subs if self.open[sub.id]]
        if busy:
            self.run_for(busy[which % len(busy)])

    @rule()
    def run_most_overdue(self) -> None:
        """The sweep's order: the item that came due first."""
        if not any(self.open.values()):
            return
        _, items = self.load()
        if items:
            oldest = min(items, key=lambda i: (i.available_at, i.id))
            self.run_for(self.sub_of(int(str(oldest.payload["change_id"]))))
        else:
            self.run_for(next(sub for sub in self.subs if self.open[sub.id]))

    def run_for(self, sub: Sub) -> None:
        rig, fake, stats = self.rig, self.rig.fake, self.rig.stats
        stats.steps += 1
        item = self.live_item(sub)
        if item is None:  # what is open waits behind a failed change
            return
        stats.runs += 1
        spec = None
        if (self.runs_done + self.phase) % FAULT_EVERY == 0:  # one run in five
            spec = self.order[self.faults_done % len(self.order)]
            self.faults_done += 1
        self.runs_done += 1
        note(f"run for subscription {self.subs.index(sub)}: fault {spec.name if spec else None}")
        injected = spec.faults(sub.ref) if spec else []
        if spec:
            stats.injected[spec.name] += 1
            fake.inject(*injected)
        since = rig.tap.count()
        self.run_now(item)
        met = spec is not None and fake.pending_faults < len(injected)
        fake.clear_faults()
        answers = rig.tap.answers(since)
        if spec is not None and met:
            stats.met[spec.name] += 1
        self.after_run(sub, spec if met else None, answers)

    def after_run(self, sub: Sub, spec: FaultSpec | None, answers: list[Any]) -> None:
        """What a run must have done, given the fault it met (if any)."""
        rig, fake = self.rig, self.rig.fake
        found, items = self.load()
        by_rid = {ms_request_id(c.request_id): c for c in found}
        mine = [c for c in found if c.subscription_id == sub.id]
        self.open[sub.id] = sum(1 for c in mine if c.state not in _SETTLED)
        if any(c.state is ChangeState.FAILED for c in mine):
            self.open[sub.id] = 0  # held behind a failed change: staff must act
        if spec is not None and spec.business is not None:
            status, code, description = spec.business
            refused = [a for a in answers if a.method == "PATCH" and a.status == status]
            assert refused, f"{spec.name} was met, but no PATCH was answered {status}"
            rid = refused[0].request_id
            self.refusals[rid] = spec.business
            change = by_rid[rid]
            if change.state is not ChangeState.REJECTED and _timed_out(change):
                rig.stats.spurious += 1  # the answer came after the client's timeout
            else:
                assert change.state is ChangeState.REJECTED, (spec.name, change.state)
        if spec is not None and spec.recovered_at_once:
            refused = [a for a in answers if a.status == 401]
            again = [a for a in answers if a.at > refused[0].at and a.path == refused[0].path]
            assert again and again[0].method == refused[0].method, "no retry after the 401"
            if refused[0].method == "PATCH":  # the same operation: the same MS-RequestId
                assert again[0].request_id == refused[0].request_id
            stuck = [c for c in mine if c.state is ChangeState.RETRYING]
            if stuck and _timed_out(stuck[0]):
                rig.stats.spurious += 1  # an answer came after the client's timeout
            else:
                assert not stuck, f"{spec.name}: not got over at once ({stuck[0].provider_answer})"
        if spec is not None and spec.effect_unknown:
            lost = [a for a in answers if a.method == "PATCH" and (a.delayed or a.status == 0)]
            assert lost, f"{spec.name} was met, but no PATCH answer was lost"
            rid = lost[0].request_id
            if fake.effects(rid) == 1:  # resolved by reading back: never sent again
                self.effect_unknown.add(rid)
                self.sent_no_more[rid] = (self.patches(rid), "an unknown outcome was sent again")
        for change in mine:
            rid = ms_request_id(change.request_id)
            if change.state is ChangeState.REJECTED and rid not in self.rejected:
                self.rejected.add(rid)
                self.sent_no_more[rid] = (self.patches(rid), "a rejected change was sent again")
                assert rid in self.refusals, (
                    f"change {change.id} rejected without a business refusal: "
                    f"{change.provider_code} {change.provider_answer}"
                )
                status, code, description = self.refusals[rid]
                assert change.provider_code == code, (change.provider_code, code)
                assert description in (change.provider_answer or ""), change.provider_answer
                rig.stats.rejections += 1
        if spec is not None and spec.retry_after is not None:
            self.check_retry_after(sub, spec, answers, mine, items)

    def check_retry_after(
        self,
        sub: Sub,
        spec: FaultSpec,
        answers: list[Any],
        mine: list[LicenceChange],
        items: list[OutboxItem],
    ) -> None:
        assert spec.retry_after is not None
        told = [a for a in answers if a.status in (429, 503)]
        assert told, f"{spec.name} was met, but nothing was answered 429/503"
        retrying = [c for c in mine if c.state is ChangeState.RETRYING]
        if not retrying:  # retries exhausted: failed for staff
            return
        (change,) = retrying
        (item,) = [i for i in items if int(str(i.payload["change_id"])) == change.id]
        wait = (item.available_at - told[-1].wall).total_seconds()
        assert wait >= spec.retry_after, (
            f"{spec.name}: the retry comes {wait:.3f}s after the answer, before Retry-After"
        )
        if wait > spec.retry_after * 1.1:  # asserted by test_retry_after_within_ten_percent
            self.rig.stats.late.append(
                f"{spec.name}: attempt {item.attempts} retried {wait:.2f}s after the answer"
            )
        self.rig.stats.retry_after_checked += 1

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def nothing_applied_twice(self) -> None:
        if not self.subs:
            return
        fake, rids = self.rig.fake, self.request_ids()
        for rid, change in rids.items():
            assert fake.effects(rid) <= 1, f"change {change.id} applied twice"
        for answer in self.rig.tap.answers(self.tap_start):
            if answer.method == "PATCH":
                assert answer.request_id in rids, "a PATCH with a request id of no change"
        total = sum(fake.effects(rid) for rid in rids)
        assert fake.total_effects - self.effects_before == total, "an effect under another id"
        for rid, (count, what) in self.sent_no_more.items():
            assert self.patches(rid) == count, f"{what} ({rid})"

    @invariant()
    def nothing_lost(self) -> None:
        if not self.subs:
            return
        found, items = self.load()
        live = {int(str(i.payload["change_id"])): i for i in items}
        assert all(i.state is OutboxState.PENDING for i in items), "an item left running"
        assert len(found) == sum(len(made) for made in self.changes.values())
        for sub in self.subs:
            mine = [c for c in found if c.subscription_id == sub.id]
            on_its_way = [c for c in mine if c.state in _ON_ITS_WAY]
            assert len(on_its_way) <= 1, "two changes of one subscription on their way"
            for position, change in enumerate(mine):
                if change.state in _ON_ITS_WAY:
                    assert change.id in live, f"change {change.id} ({change.state}) has no item"
                elif change.state is ChangeState.AWAITING:
                    assert any(c.state in HOLDING_STATES for c in mine[:position]), (
                        f"change {change.id} awaits, but nothing before it holds it back"
                    )
                else:
                    assert change.state in _SETTLED, (change.id, change.state)

    # -- the end of an example ----------------------------------------------------------------

    def teardown(self) -> None:
        if self.subs:
            self.drain()
            self.check_the_end()

    def drain(self) -> None:
        """Run everything left, without faults, until nothing is on its way."""
        for _ in range(DRAIN_ROUNDS):
            _, items = self.load()
            if not items:
                return
            for item in sorted(items, key=lambda i: i.available_at):
                self.run_now(item)
            for sub in self.subs:
                self.after_run(sub, None, [])
        pytest.fail(f"not drained after {DRAIN_ROUNDS} rounds")

    def check_the_end(self) -> None:
        rig, fake = self.rig, self.rig.fake
        self.nothing_lost()
        self.nothing_applied_twice()
        found, items = self.load()
        assert items == []
        local = quantities(rig.app, self.subs)
        for sub in self.subs:
            mine = [c for c in found if c.subscription_id == sub.id]
            failed = [c for c in mine if c.state is ChangeState.FAILED]
            rig.stats.failed += len(failed)
            for change in mine:
                effects = fake.effects(change.request_id)
                if change.state is ChangeState.PROVISIONED:
                    assert effects == 1, f"provisioned change {change.id}: {effects} effects"
                elif change.state is ChangeState.REJECTED:
                    assert effects == 0, f"rejected change {change.id} took effect"
            if failed:  # staff resolve it; the provider shows either side of the failed change
                assert fake_quantity(fake, sub) in (failed[0].quantity_from, failed[0].quantity_to)
                continue
            provisioned = [c for c in mine if c.state is ChangeState.PROVISIONED]
            assert local[sub.id] == fake_quantity(fake, sub), "the portal disagrees with Microsoft"
            if provisioned:
                assert local[sub.id] == provisioned[-1].quantity_to
        for rid in self.effect_unknown:
            settled = self.request_ids()[rid]
            assert self.state_of(settled.id) is ChangeState.PROVISIONED, settled.id
            rig.stats.unknown_resolved += 1


def _timed_out(change: LicenceChange) -> bool:
    """The change is retrying because an answer came later than the client waits: a busy
    machine, not the fault under test (the invariants still hold it to the rules)."""
    answer = change.provider_answer or ""
    return change.state is ChangeState.RETRYING and any(
        words in answer for words in ("timed out", "in time", "could not connect")
    )


_ON_ITS_WAY = (ChangeState.QUEUED, ChangeState.PROVISIONING, ChangeState.RETRYING)
_SETTLED = (ChangeState.PROVISIONED, ChangeState.REJECTED, ChangeState.FAILED)


def test_provider_faults_lose_nothing_duplicate_nothing_and_honour_retry_after(rig: Rig) -> None:
    FaultMatrix.rig = rig
    started = time.monotonic()
    with time_machine.travel(utcnow(), tick=True) as clock:  # only ever moved forward
        FaultMatrix.clock = clock
        # Hypothesis draws how many steps an example takes (about ten on average here, up to
        # STEPS), so the machine is run in batches until the operations asked for are done.
        for _ in range(MAX_BATCHES):
            left = OPERATIONS - rig.stats.steps
            if left <= 0:
                break
            run_state_machine_as_test(
                FaultMatrix,
                settings=settings(
                    max_examples=max(1, left // TYPICAL_STEPS),
                    stateful_step_count=STEPS,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                ),
            )
    with get_database(rig.app).engine.connect() as connection:  # PostgreSQL's clock is real
        real = connection.scalar(sa.select(sa.func.now()))
    assert abs(real - utcnow()) < timedelta(seconds=5), "the simulated clock outlived the test"
    stats = rig.stats
    faults = sum(stats.met.values())
    print(
        f"B2: {stats.steps} operations ({stats.requests} requests, {stats.runs} runs) in "
        f"{stats.examples} examples, {time.monotonic() - started:.1f}s; faults met "
        f"{faults} ({faults / max(stats.runs, 1):.0%} of runs): {dict(stats.met)} "
        f"(injected {sum(stats.injected.values())}); "
        f"Retry-After checked {stats.retry_after_checked}, rejections {stats.rejections}, "
        f"unknown outcomes resolved {stats.unknown_resolved}, failed {stats.failed}; "
        f"retried more than 10 % after Retry-After: {len(stats.late)} {stats.late[:3]}; "
        f"checks skipped for a timeout the machine caused: {stats.spurious}"
    )
    assert stats.retry_after_checked and stats.rejections and stats.unknown_resolved
    assert not stats.late, f"retried more than 10 % after Retry-After: {stats.late[:5]}"


RETRY_AFTER_ROUNDS = 40  # half of them after a 500: a pass by chance is below 1e-5


def test_a_429_is_retried_within_ten_percent_of_its_retry_after(rig: Rig) -> None:
    """B2, Retry-After: the retry after a ``429`` comes no earlier than ``Retry-After`` and at
    most 10 % later, whether the change met the ``429`` on its first attempt or after an
    earlier technical failure (here a ``500``)."""
    app, fake, tap = rig.app, rig.fake, rig.tap
    sub = rig.fresh()[2]  # a tenant of its own: no neighbour's pause
    waits: list[tuple[int, float]] = []
    with time_machine.travel(utcnow(), tick=True) as clock:

        def run_due(change_id: int) -> OutboxItem:
            (item,) = [
                i
                for i in provision_items_of(app, rig.seeded.partner_id)
                if int(str(i.payload["change_id"])) == change_id
            ]
            if item.available_at > utcnow():
                clock.move_to(item.available_at + timedelta(milliseconds=5))
            with app.app_context():
                run_item(app, item.id)
            return item

        quantity = quantities(app, [sub])[sub.id]
        for round_ in range(RETRY_AFTER_ROUNDS):
            quantity = quantity + 1 if quantity < MAX_QUANTITY else 1
            (change,) = request_changes(app, [(sub, quantity)])
            if round_ % 2:  # a technical failure first: the 429 meets the second attempt
                fake.inject(Fault.server_error(500, path=sub.ref))
                run_due(change.id)
                fake.clear_faults()
            fake.inject(Fault.throttle(2, path=sub.ref))
            since = tap.count()
            item = run_due(change.id)
            fake.clear_faults()
            (told,) = [a for a in tap.answers(since) if a.status == 429]
            (retried,) = [
                i
                for i in provision_items_of(app, rig.seeded.partner_id)
                if i.id == item.id and i.state is OutboxState.PENDING
            ]
            waits.append((retried.attempts, (retried.available_at - told.wall).total_seconds()))
            run_due(change.id)  # provisioned: the next round starts from a settled state
    early = [(attempt, wait) for attempt, wait in waits if wait < 2]
    late = [(attempt, wait) for attempt, wait in waits if wait > 2 * 1.1]
    assert not early, f"retried before Retry-After (attempt, seconds): {early}"
    assert not late, f"retried more than 10 % after Retry-After (attempt, seconds): {late}"


def provision_items_of(app: Flask, partner_id: int) -> list[OutboxItem]:
    with get_database(app).sessions() as s:
        return list(
            s.scalars(
                sa.select(OutboxItem).where(
                    OutboxItem.partner_id == partner_id,
                    OutboxItem.kind == PROVISION_KIND,
                    OutboxItem.state == OutboxState.PENDING,
                )
            )
        )
