"""Licence changes provisioned by real ``celery worker`` processes against the Partner Center fake.

B1 (reliability notes §6): a solo worker is SIGKILLed at each crash point of a provisioning run,
twice per point (two victim subscriptions), then restarted while the sweep runs (lease 2 s):

- ``before_call``: the change is claimed and marked ``provisioning``, the adapter's read before
  the PATCH is held at the fake (a 5 s latency fault) and the worker dies: nothing was changed;
- ``after_effect``: the fake carried the PATCH out and holds the answer back (a timeout fault
  with effect); the worker dies before our commit. The retry reads the subscription back and
  sends nothing again;
- ``after_commit``: a ``task_postrun`` hook in the worker (run after the task's commit, before
  Celery's acknowledgement) kills it. Its message is still unacknowledged, so the test delivers
  it again, as Redis would: the claim refuses it.

Each time: every change ends ``provisioned``, the fake counts exactly one effect per request
id, and the portal's quantity equals the fake's. The second change of each subscription waits
for the first (``awaiting``), so a lost release would show as a change never provisioned.

B2-lite: about 100 changes with 429 + Retry-After, 5xx, timeouts (with and without effect),
dropped connections after the effect and business 400/2002 injected at the fake: nothing lost,
nothing applied twice, rejections final after one call with the provider's reason, every
technical failure provisioned in the end.

The workers get a fixed bearer token through ``PORTAL_PARTNER_CENTER_STATIC_TOKEN`` (the
plugin accepts it for a fake on 127.0.0.1 only); they start through :data:`WORKER_BOOT` for
the kill hook.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from partner_center_provider.client import ms_request_id
from partner_center_provider.fake import FakePartnerCenter, Fault

from portal import create_app
from portal.core.db import get_database, utcnow
from portal.core.extensions import rendering_in
from portal.core.roles import CustomerRole
from portal.features.catalogue.models import Product, ProductPrice
from portal.features.catalogue.rules import (
    BillingFrequency,
    ProductClass,
    ReductionBehaviour,
    SubscriptionType,
    Term,
)
from portal.features.identity.models import Membership, User
from portal.features.licences.models import (
    AgreementAcceptance,
    AttestationState,
    LicenceChange,
    Subscription,
    SubscriptionStatus,
)
from portal.features.licences.rules import ChangeState
from portal.features.licences.services.subscriptions import request_quantity
from portal.features.tenancy.models import Customer, Partner, PartnerHost
from portal.outbox.models import OutboxItem
from tests.reliability.conftest import (
    REDIS_URL,
    ROOT,
    Worker,
    Workers,
    settings,
    wait_until,
)

pytestmark = pytest.mark.postgres

LEASE_SECONDS = 2
OFFER_ID = "CFQ7TTC0LH18:0001"
START_QUANTITY = 10
PYTHON = ROOT / ".venv" / "bin" / "python"

# ``celery`` with (TEST_KILL_AFTER_COMMIT) a hook that SIGKILLs the worker after a
# provisioning task committed, before Celery acknowledges its message
WORKER_BOOT = """
import os, signal, sys
from pathlib import Path
markers = os.environ.get("TEST_KILL_AFTER_COMMIT")
if markers:
    from celery.signals import task_postrun

    def kill_after_commit(args=None, retval=None, **_):
        if retval != "done" or not args:
            return
        from portal.core.db import get_database
        from portal.outbox.models import OutboxItem
        from portal.worker import flask_app
        with get_database(flask_app).sessions() as session:
            item = session.get(OutboxItem, int(args[0]))
        if item is None or item.kind != "licences.provision":
            return
        if len(list(Path(markers).glob("killed-*"))) >= int(os.environ["TEST_KILLS"]):
            return
        (Path(markers) / f"killed-{item.id}").touch()
        os.kill(os.getpid(), signal.SIGKILL)

    task_postrun.connect(kill_after_commit, weak=False)
from celery.__main__ import main
sys.argv[0] = "celery"
sys.exit(main())
"""


class PartnerCenterWorkers(Workers):
    """Workers started through :data:`WORKER_BOOT`."""

    def start(self, name: str, pool: str = "solo", wait: bool = True, beat: bool = False) -> Worker:
        import subprocess

        log = self.log_dir / f"{name}-{len(self.started)}.log"
        command = [
            str(PYTHON),
            "-c",
            WORKER_BOOT,
            "-A",
            "portal.worker",
            "worker",
            "--pool",
            pool,
            "-c",
            "1" if pool == "solo" else "4",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            self.queue,
            "-n",
            f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel",
            "INFO",
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, process, log)
        self.started.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker


# -- the set-up --------------------------------------------------------------------------------


@dataclass
class Setup:
    app: Flask
    fake: FakePartnerCenter
    workers: PartnerCenterWorkers
    subscriptions: list[tuple[int, str, str]] = field(default_factory=list)  # id, tenant, ref

    def sessions(self) -> Any:
        return get_database(self.app).sessions()


@pytest.fixture
def pc(reliability_db: str, queue: str, tmp_path: Path) -> Iterator[Setup]:
    fake = FakePartnerCenter(max_quantity=10_000).start()
    shared = {
        **settings(reliability_db, REDIS_URL, queue),
        "PORTAL_PLUGINS": "partner_center_provider",
        "PORTAL_PROVIDER": "partner_center",
        "PORTAL_OUTBOX_LEASE_SECONDS": str(LEASE_SECONDS),
        "PORTAL_RATELIMIT_STORAGE_URL": REDIS_URL,
        "PORTAL_PROVIDER_CALL_LIMIT": "100000 per minute",
        "PORTAL_MAIL_BACKEND": "console",
        "PORTAL_PARTNER_CENTER_BASE_URL": fake.url,
        "PORTAL_PARTNER_CENTER_STATIC_TOKEN": "reliability-static-token",
        "PORTAL_PARTNER_CENTER_TIMEOUT_SECONDS": "1",
        "PORTAL_PARTNER_CENTER_POLL_INTERVAL_SECONDS": "0.2",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_PARTNER_CENTER_")}
    plugin = {
        k.removeprefix("PORTAL_PARTNER_CENTER_"): v
        for k, v in shared.items()
        if k.startswith("PORTAL_PARTNER_CENTER_")
    }
    app = create_app(
        {
            **shared,
            "PORTAL_OUTBOX_LEASE_SECONDS": LEASE_SECONDS,
            "PORTAL_PLUGIN_SETTINGS": {"partner_center": plugin},  # workers: the environment
        }
    )
    workers = PartnerCenterWorkers({**env, **shared}, queue, tmp_path)
    engine = sa.create_engine(reliability_db)
    with engine.begin() as conn:  # other reliability tests' items would reach our queue
        conn.execute(sa.text("TRUNCATE outbox_item RESTART IDENTITY"))
    engine.dispose()
    try:
        yield Setup(app, fake, workers)
    finally:
        workers.kill_all()
        fake.stop()
        get_database(app).dispose()


def seed(setup: Setup, customers: int, per_customer: int) -> None:
    """A partner of its own, ``customers`` tenants (MCA accepted) of ``per_customer``
    subscriptions each, at the fake and in the portal."""
    bought = utcnow() - timedelta(days=30)
    slug = f"rel-{uuid.uuid4().hex[:8]}"
    with setup.app.app_context(), setup.sessions() as s:
        partner = Partner(
            slug=slug,
            name="Reliability Cloud",
            primary_colour="#0b5cad",
            support_email="help@reliability.example",
            hosts=[PartnerHost(host=f"{slug}.example")],
        )
        s.add(partner)
        s.flush()
        product = Product(
            partner_id=partner.id,
            name="Microsoft 365 E3",
            description="",
            product_class=ProductClass.RESALE,
            subscription_type=SubscriptionType.LICENCE,
            provider_key="partner_center",
            provider_offer_id=OFFER_ID,
            term=Term.P1M,
            billing_frequency=BillingFrequency.MONTHLY,
            min_quantity=1,
            max_quantity=10_000,
            reduction=ReductionBehaviour.ALLOWED,
            window_hours=168,
            requires_mca=True,
            active=True,
            prices=[
                ProductPrice(partner_id=partner.id, currency="USD", price_minor=3600, cost_minor=1)
            ],
        )
        s.add(product)
        s.flush()
        for number in range(customers):
            tenant = setup.fake.add_customer(mca_accepted=True)
            customer = Customer(
                partner_id=partner.id,
                name=f"Customer {number}",
                ms_tenant_id=tenant,
                default_currency="USD",
                provider_key="partner_center",
            )
            s.add(customer)
            s.flush()
            user = User(
                partner_id=partner.id,
                email=f"admin@c{number}.{slug}.example",
                name=f"Admin {number}",
                password_hash="!",
            )
            s.add(user)
            s.flush()
            s.add(
                Membership(
                    customer_id=customer.id, user_id=user.id, role=CustomerRole.ADMINISTRATOR
                )
            )
            s.add(
                AgreementAcceptance(
                    partner_id=partner.id,
                    customer_id=customer.id,
                    provider_key="partner_center",
                    template_id="seed-template",
                    agreement_link="https://www.microsoft.com/licensing/docs/customeragreement",
                    first_name="Signer",
                    last_name=customer.name,
                    email="signer@example.com",
                    accepted_at=bought,
                    request_id=str(uuid.uuid4()),
                    state=AttestationState.CONFIRMED,
                    confirmed_at=bought,
                )
            )
            for _ in range(per_customer):
                ref = setup.fake.add_subscription(
                    tenant, OFFER_ID, START_QUANTITY, purchased_at=bought
                )
                subscription = Subscription(
                    partner_id=partner.id,
                    customer_id=customer.id,
                    product_id=product.id,
                    provider_key="partner_center",
                    provider_ref=ref,
                    status=SubscriptionStatus.ACTIVE,
                    quantity=START_QUANTITY,
                    term=Term.P1M,
                    billing_frequency=BillingFrequency.MONTHLY,
                    currency="USD",
                    term_started_at=bought,
                    term_ends_on=(bought + timedelta(days=30)).date(),
                    version=0,
                    created_at=bought,
                )
                s.add(subscription)
                s.flush()
                setup.subscriptions.append((subscription.id, tenant, ref))
        s.commit()


def record(setup: Setup, rounds: int) -> list[int]:
    """``rounds`` changes per subscription (one seat more each), through the use case, in one
    transaction; its commit dispatches the first change of each subscription."""
    ids: list[int] = []
    with setup.app.app_context(), rendering_in("en"), setup.sessions() as s:
        for round_ in range(1, rounds + 1):
            for subscription_id, _tenant, _ref in setup.subscriptions:
                subscription = s.get_one(Subscription, subscription_id)
                customer = s.get_one(Customer, subscription.customer_id)
                partner = s.get_one(Partner, customer.partner_id)
                user = s.scalars(
                    sa.select(User)
                    .join(Membership, Membership.user_id == User.id)
                    .where(Membership.customer_id == customer.id)
                ).one()
                change = request_quantity(
                    s,
                    partner,
                    customer,
                    subscription,
                    START_QUANTITY + round_,
                    subscription.version,
                    user,
                )
                ids.append(change.id)
        s.commit()
    return ids


def changes(setup: Setup, ids: list[int]) -> list[LicenceChange]:
    with setup.sessions() as s:
        return list(
            s.scalars(sa.select(LicenceChange).where(LicenceChange.id.in_(ids)).order_by("id"))
        )


def finished(setup: Setup, ids: list[int]) -> bool:
    final = (ChangeState.PROVISIONED, ChangeState.REJECTED, ChangeState.FAILED)
    return all(c.state in final for c in changes(setup, ids))


def describe(setup: Setup, ids: list[int]) -> str:
    states: dict[str, int] = {}
    for change in changes(setup, ids):
        states[change.state.value] = states.get(change.state.value, 0) + 1
    return f"changes {states}\n{setup.workers.logs()}"


def path_of(tenant: str, ref: str) -> str:
    return f"/v1/customers/{tenant}/subscriptions/{ref}"


def patches(setup: Setup, request_id: str) -> int:
    wanted = ms_request_id(request_id)
    return sum(
        1
        for r in setup.fake.requests
        if r.method == "PATCH" and r.headers.get("MS-RequestId") == wanted
    )


def assert_consistent(setup: Setup, ids: list[int]) -> list[LicenceChange]:
    """No change lost or applied twice; portal and fake agree on every quantity."""
    found = changes(setup, ids)
    assert len(found) == len(ids)
    for change in found:
        expected = 1 if change.state is ChangeState.PROVISIONED else 0
        assert setup.fake.effects(change.request_id) == expected, (change.id, change.state)
    with setup.sessions() as s:
        local = dict(s.execute(sa.select(Subscription.id, Subscription.quantity)).all())
    for subscription_id, tenant, ref in setup.subscriptions:
        provisioned = [
            c
            for c in found
            if c.subscription_id == subscription_id and c.state is ChangeState.PROVISIONED
        ]
        last = max(provisioned, key=lambda c: c.sequence).quantity_to if provisioned else None
        at_fake = (setup.fake.subscription(tenant, ref) or {}).get("quantity")
        assert local[subscription_id] == at_fake == (last or START_QUANTITY), subscription_id
    return found


def recover(
    setup: Setup,
    worker: Worker,
    ids: list[int],
    timeout: float,
    pool: str = "solo",
    on_tick: Callable[[Worker], None] | None = None,
) -> int:
    """Restart the worker whenever it died and sweep, until every change finished; returns the
    number of restarts."""
    from portal.outbox.items import sweep

    restarts = 0
    last_sweep = 0.0

    def done() -> bool:
        nonlocal worker, restarts, last_sweep
        if on_tick is not None:
            on_tick(worker)
        if not worker.alive():  # what a supervisor does
            restarts += 1
            worker = setup.workers.start("victim", pool=pool, wait=False)
        if time.monotonic() - last_sweep > 0.5:
            last_sweep = time.monotonic()
            if finished(setup, ids):
                return True
            sweep(setup.app)  # what beat does every PORTAL_OUTBOX_SWEEP_SECONDS
        return False

    wait_until(done, timeout, lambda: describe(setup, ids), every=0.02)
    return restarts


# -- B1: a worker killed at each crash point ---------------------------------------------------

TRIALS = 2  # victim subscriptions per crash point


@pytest.mark.parametrize("point", ["before_call", "after_effect", "after_commit"])
def test_a_worker_killed_while_provisioning_loses_nothing_and_applies_once(
    point: str, pc: Setup, tmp_path: Path
) -> None:
    seed(pc, customers=1, per_customer=TRIALS + 1)
    victims = pc.subscriptions[:TRIALS]
    if point == "before_call":  # the read before the PATCH is held: the worker dies there
        for _sid, _tenant, ref in victims:
            pc.fake.inject(Fault.latency(5, method="GET", path=ref))
    elif point == "after_effect":  # the PATCH is carried out, its answer held back
        for _sid, _tenant, ref in victims:
            pc.fake.inject(Fault.timeout(5, effect=True, method="PATCH", path=ref))
    else:
        markers = tmp_path / "markers"
        markers.mkdir()
        pc.workers.env.update(TEST_KILL_AFTER_COMMIT=str(markers), TEST_KILLS=str(TRIALS))
    ids = record(pc, rounds=2)
    by_subscription = {c.subscription_id: c for c in changes(pc, ids) if c.sequence == 1}
    first_of = {ref: by_subscription[sid] for sid, _tenant, ref in victims}
    pending_kills = {} if point == "after_commit" else dict(first_of)  # else: the hook kills
    tenants = {ref: tenant for _sid, tenant, ref in victims}

    def kill_at_the_point(worker: Worker) -> None:
        for ref, change in list(pending_kills.items()):
            if point == "before_call":
                hit = bool(pc.fake.requests_to(path_of(tenants[ref], ref), "GET"))
            elif point == "after_effect":
                hit = pc.fake.effects(change.request_id) == 1
            else:
                return
            if hit:
                assert worker.alive(), "the worker died before the crash point"
                worker.kill()
                del pending_kills[ref]

    worker = pc.workers.start("victim", wait=False)
    restarts = recover(pc, worker, ids, timeout=60, on_tick=kill_at_the_point)

    assert restarts == TRIALS, f"{restarts} restarts for {TRIALS} kills\n{pc.workers.logs()}"
    assert not pending_kills
    if point == "after_commit":
        killed = sorted(int(p.name.removeprefix("killed-")) for p in markers.glob("killed-*"))
        assert len(killed) == TRIALS
        # their messages were never acknowledged: Redis would deliver them again
        from portal.outbox.items import dispatch_ids

        dispatch_ids(pc.app, killed)
        time.sleep(1.5)  # the running worker takes them: the claim must refuse
        with pc.sessions() as s:
            attempts = [s.get_one(OutboxItem, item_id).attempts for item_id in killed]
        assert attempts == [1] * TRIALS, "work committed as done ran again"

    found = assert_consistent(pc, ids)
    assert all(c.state is ChangeState.PROVISIONED for c in found), describe(pc, ids)
    for change in found:
        assert patches(pc, change.request_id) == 1, "a change was sent to the provider twice"
    victims_first = [first_of[ref] for _sid, _tenant, ref in victims]
    expected_attempts = 1 if point == "after_commit" else 2
    for change in changes(pc, [c.id for c in victims_first]):
        assert change.attempts == expected_attempts, (point, change.id, change.attempts)
    if point == "after_effect":  # the retry read the subscription back: no second PATCH
        for _sid, tenant, ref in victims:
            assert len(pc.fake.requests_to(path_of(tenant, ref), "GET")) >= 2


# -- B2-lite: faults at the provider -----------------------------------------------------------

BUSINESS_REASON = "Quantity out of range: at most 300 seats for this offer."


def test_provider_faults_lose_nothing_apply_once_and_rejections_are_final(pc: Setup) -> None:
    seed(pc, customers=5, per_customer=5)  # 25 subscriptions x 4 changes
    fake = pc.fake
    subs = pc.subscriptions
    # first in the list: the first PATCH of subscriptions 0-3 is refused for a business reason
    for _sid, _tenant, ref in subs[:4]:
        fake.inject(Fault.business(400, 2002, BUSINESS_REASON, method="PATCH", path=ref))
    for _sid, _tenant, ref in subs[10:13]:  # the read before the PATCH fails
        fake.inject(Fault.server_error(500, method="GET", path=ref))
    fake.inject(Fault.throttle(1, method="PATCH"), times=5)
    fake.inject(Fault.server_error(503, method="PATCH"), times=5)
    fake.inject(Fault.timeout(1.5, effect=True, method="PATCH"), times=4)
    fake.inject(Fault.timeout(1.5, effect=False, method="PATCH"), times=3)
    fake.inject(Fault.drop_after_effect(method="PATCH"), times=5)
    ids = record(pc, rounds=4)
    assert len(ids) == 100

    worker = pc.workers.start("faults", pool="prefork")
    restarts = recover(pc, worker, ids, timeout=75, pool="prefork")
    assert restarts == 0, pc.workers.logs()
    assert fake.pending_faults == 0, "every fault was met"

    found = assert_consistent(pc, ids)
    states = {c.id: c.state for c in found}
    rejected = [c for c in found if c.state is ChangeState.REJECTED]
    assert len(rejected) == 4, states
    refused = {sid for sid, _tenant, _ref in subs[:4]}
    assert {(c.subscription_id, c.sequence) for c in rejected} == {(sid, 1) for sid in refused}
    for change in rejected:
        assert change.provider_code == "2002"
        assert BUSINESS_REASON in (change.provider_answer or "")
        assert change.attempts == 1, "a business rejection was retried"
        assert patches(pc, change.request_id) == 1
    provisioned = [c for c in found if c.state is ChangeState.PROVISIONED]
    assert len(provisioned) == 96, states
    assert max(c.attempts for c in provisioned) > 1, "no technical failure was retried"
    with pc.sessions() as s:
        failed_items = s.scalar(
            sa.select(sa.func.count()).select_from(OutboxItem).where(OutboxItem.state == "failed")
        )
    assert failed_items == 0
    assert fake.errors == []
