"""Provisioning benchmark: licence changes through the real worker pool to a 100 ms Partner Center.

Run from the repository root: ``.venv/bin/python bench/provisioning.py``. It creates a throw-away
PostgreSQL database (``portal_bench_provisioning``), migrates it, starts the Partner Center fake
(:class:`partner_center_provider.fake.FakePartnerCenter`, every answer 100 ms late) in this
process and seeds 200 subscriptions (40 customer tenants of 5, MCA accepted, provider
``partner_center``). Then:

- it starts BENCH_WORKERS (1) ``celery worker --pool BENCH_POOL -c BENCH_CONCURRENCY``
  (prefork, 20) on Redis db 13 (or ``BENCH_REDIS_URL``) with ``PORTAL_PROVIDER_CALLS_AT_ONCE``
  = BENCH_CALLS_AT_ONCE (16): 16 provider calls may be in flight at once, and while some of
  the 20 processes read, write and commit around their calls the others keep the 16 calls
  busy (the fake counts the requests it holds at once, and the run fails if it ever held more
  than 16). Prefork rather than threads: the work per change is CPU-heavy Python (ORM, mail), and
  2 threaded workers of 8 spent 46 ms of CPU per change against 31 ms for 16 processes (GIL
  contention), and ran at 21 changes/s against 30; a threaded worker of 16 would also need more
  connections than the engine's default pool (5 + 10 overflow), since a run holds its
  connection across the provider calls;
- it records 1,000 quantity changes (5 per subscription, in order) through
  :func:`portal.features.licences.services.subscriptions.request_quantity`, as the subscription
  page does, all in one
  transaction: the first change of each subscription is queued, the 4 later ones wait as
  ``awaiting`` (``earlier_change``) and each is released by the provisioning of the one before;
- the clock runs from that commit (which dispatches the first 200) until every change is
  ``provisioned`` (the database is polled every 50 ms).

Checks: lost (changes not provisioned), duplicated (request ids the fake carried out more than
once), and each subscription's final quantity at the fake and in the portal equal to its last
target. The limit is 16 concurrent calls / 0.1 s = 160 changes/s. One line goes to stdout:
``bench: provisioning changes_per_s=… limit_per_s=160 ratio=… lost=… duplicated=…``; where the
time went goes to stderr. Exit code 0 when the run completed (target met or not), non-zero when
it broke or a check failed.

The workers get a fixed bearer token (``PORTAL_PARTNER_CENTER_STATIC_TOKEN``, which the plugin
accepts only for a Partner Center on 127.0.0.1): the fake only wants *a* bearer token.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYTHON = ROOT / ".venv" / "bin" / "python"
DATABASE = "portal_bench_provisioning"
SERVER_URL = os.environ.get("BENCH_PG_SERVER", "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE_URL = f"{SERVER_URL}/{DATABASE}"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = "bench-provisioning"

SUBSCRIPTIONS = int(os.environ.get("BENCH_SUBSCRIPTIONS", "200"))
CHANGES_PER_SUBSCRIPTION = int(os.environ.get("BENCH_CHANGES_PER_SUBSCRIPTION", "5"))
SUBSCRIPTIONS_PER_CUSTOMER = 5
POOL = os.environ.get("BENCH_POOL", "prefork")
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
THREADS = int(os.environ.get("BENCH_CONCURRENCY", "20"))  # the pool size of each worker
# provider calls allowed at once (PORTAL_PROVIDER_CALLS_AT_ONCE, per worker host); 0: the pool
CALLS_AT_ONCE = int(os.environ.get("BENCH_CALLS_AT_ONCE", "16"))
LATENCY_S = float(os.environ.get("BENCH_LATENCY", "0.1"))
POOL_SIZE = WORKERS * THREADS
IN_FLIGHT = CALLS_AT_ONCE or POOL_SIZE
LIMIT_PER_S = IN_FLIGHT / LATENCY_S
TARGET_RATIO = 0.7
START_QUANTITY = 10
OFFER_ID = "CFQ7TTC0LH18:0001"
START_TIMEOUT_S = 60.0
SLOTS_DIR = Path(tempfile.gettempdir()) / f"portal-bench-call-slots-{os.getpid()}"
STALL_TIMEOUT_S = 60.0  # no change finished for this long: the run is broken
POLL_S = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The run broke: its numbers would mean nothing."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def wait_for(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_S)


# --- CPU accounting -------------------------------------------------------------------------


def _cpu_seconds(select_: Callable[[str, int, int], bool]) -> float:
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            raw = Path(entry.path, "stat").read_text()
            name = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2 :].split()
            if select_(name, int(fields[2]), int(entry.name)):
                ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def cpu_of(groups: set[int]) -> float:
    return _cpu_seconds(lambda _name, pgrp, _pid: pgrp in groups)


def cpu_of_pids(pids: set[int]) -> float:
    return _cpu_seconds(lambda _name, _pgrp, pid: pid in pids)


def postgres_cpu() -> float:
    return _cpu_seconds(lambda name, _pgrp, _pid: name.startswith("postgres"))


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


# --- database, broker, settings -------------------------------------------------------------


def admin_sql(statement: str) -> None:
    engine = create_engine(f"{SERVER_URL}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


@contextmanager
def database() -> Iterator[None]:
    admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{DATABASE}"')
    try:
        from portal.cli import migrate

        migrate(DATABASE_URL)
        yield
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def settings(fake_url: str) -> dict[str, str]:
    """The ``PORTAL_*`` settings of this process and of the workers."""
    return {
        "PORTAL_ENV": "production",
        "PORTAL_SECRET_KEY": secrets.token_urlsafe(48),
        "PORTAL_DATABASE_URL": DATABASE_URL,
        "PORTAL_BROKER_URL": REDIS_URL,
        "PORTAL_TASK_QUEUE": QUEUE,
        "PORTAL_PLUGINS": "partner_center_provider",
        "PORTAL_PROVIDER": "partner_center",
        "PORTAL_RATELIMIT_STORAGE_URL": REDIS_URL,
        "PORTAL_PROVIDER_CALL_LIMIT": "100000 per minute",
        "PORTAL_MAIL_BACKEND": "console",
        "PORTAL_PARTNER_CENTER_BASE_URL": fake_url,
        "PORTAL_PARTNER_CENTER_STATIC_TOKEN": "bench-static-token",
        "PORTAL_PARTNER_CENTER_TIMEOUT_SECONDS": "10",
        "PORTAL_PROVIDER_CALLS_AT_ONCE": str(CALLS_AT_ONCE),
        "PORTAL_PROVIDER_CALL_SLOTS_DIR": str(SLOTS_DIR),
    }


# --- workers --------------------------------------------------------------------------------


@contextmanager
def worker(name: str, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``celery worker`` in its own process group, stopped on exit."""
    command = [
        str(PYTHON),
        "-m",
        "celery",
        "-A",
        "portal.worker",
        "worker",
        "--pool",
        POOL,
        "-c",
        str(THREADS),
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
        "-Q",
        QUEUE,
        "-n",
        f"{name}@%h",
        "--loglevel",
        "INFO",
    ]
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def ready(process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise BenchError(f"worker exited at start (rc {process.returncode}):\n{tail}")
    return " ready." in log_path.read_text(errors="replace")


# --- the run --------------------------------------------------------------------------------


class Bench:
    def __init__(self, fake: Any, env: dict[str, str]) -> None:
        os.environ.update({k: v for k, v in env.items() if k.startswith("PORTAL_")})
        from portal import create_app
        from portal.core.db import get_database

        self.fake = fake
        self.app = create_app()
        self.sessions = get_database(self.app).sessions
        self.subscriptions: list[tuple[int, str, str]] = []  # (id, tenant, provider ref)
        self.wall_start = datetime.now(UTC)  # set again at the commit that starts the clock

    def seed(self) -> None:
        from portal.core.db import utcnow
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
            Subscription,
            SubscriptionStatus,
        )
        from portal.features.tenancy.models import Customer, Partner, PartnerHost

        now = utcnow()
        bought = now - timedelta(days=30)
        with self.app.app_context(), self.sessions() as s:
            partner = Partner(
                slug="bench",
                name="Bench Cloud",
                primary_colour="#0b5cad",
                support_email="help@bench.example",
                hosts=[PartnerHost(host="bench.example")],
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
                    ProductPrice(
                        partner_id=partner.id, currency="USD", price_minor=3600, cost_minor=3000
                    )
                ],
            )
            s.add(product)
            s.flush()
            customers = -(-SUBSCRIPTIONS // SUBSCRIPTIONS_PER_CUSTOMER)
            for number in range(customers):
                tenant = self.fake.add_customer(mca_accepted=True)
                customer = Customer(
                    partner_id=partner.id,
                    name=f"Bench customer {number}",
                    ms_tenant_id=tenant,
                    default_currency="USD",
                    provider_key="partner_center",
                )
                s.add(customer)
                s.flush()
                user = User(
                    partner_id=partner.id,
                    email=f"admin@customer{number}.bench.example",
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
                        template_id="bench-template",
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
                for _ in range(SUBSCRIPTIONS_PER_CUSTOMER):
                    if len(self.subscriptions) == SUBSCRIPTIONS:
                        break
                    ref = self.fake.add_subscription(
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
                    self.subscriptions.append((subscription.id, tenant, ref))
            s.commit()

    def record_and_start(self) -> float:
        """Record every change in one transaction; its commit dispatches the first of each
        subscription. Returns the clock at the commit."""
        from portal.core.db import utcnow
        from portal.core.extensions import rendering_in
        from portal.features.identity.models import Membership, User
        from portal.features.licences.models import Subscription
        from portal.features.licences.services.subscriptions import request_quantity
        from portal.features.tenancy.models import Customer, Partner

        started = time.perf_counter()
        with self.app.app_context(), rendering_in("en"), self.sessions() as s:
            for round_ in range(1, CHANGES_PER_SUBSCRIPTION + 1):
                for subscription_id, _tenant, _ref in self.subscriptions:
                    subscription = s.get_one(Subscription, subscription_id)
                    customer = s.get_one(Customer, subscription.customer_id)
                    partner = s.get_one(Partner, customer.partner_id)
                    user = s.scalars(
                        select(User)
                        .join(Membership, Membership.user_id == User.id)
                        .where(Membership.customer_id == customer.id)
                    ).one()
                    request_quantity(
                        s,
                        partner,
                        customer,
                        subscription,
                        START_QUANTITY + round_,
                        subscription.version,
                        user,
                    )
            recorded = time.perf_counter()
            total = SUBSCRIPTIONS * CHANGES_PER_SUBSCRIPTION
            log(
                f"recorded {total} changes in {recorded - started:.1f} s "
                f"({(recorded - started) / total * 1000:.2f} ms per change)"
            )
            s.flush()  # recording's last inserts (the first changes' outbox items)
            clock = time.perf_counter()
            self.wall_start = utcnow()
            s.commit()  # the first change of each subscription is dispatched after this
        log(f"commit and dispatch of {SUBSCRIPTIONS}: {time.perf_counter() - clock:.2f} s")
        return clock

    def provisioned(self) -> int:
        from portal.features.licences.models import LicenceChange
        from portal.features.licences.rules import ChangeState

        with self.sessions() as s:
            count = s.scalar(
                select(func.count())
                .select_from(LicenceChange)
                .where(LicenceChange.state == ChangeState.PROVISIONED)
            )
        return int(count or 0)

    def states(self) -> dict[str, int]:
        from portal.features.licences.models import LicenceChange

        with self.sessions() as s:
            rows = s.execute(
                select(LicenceChange.state, func.count()).group_by(LicenceChange.state)
            ).all()
        return {str(state.value): int(n) for state, n in rows}

    def wait_all(self, total: int) -> None:
        last, last_change = -1, time.monotonic()
        while True:
            done = self.provisioned()
            if done >= total:
                return
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > STALL_TIMEOUT_S:
                raise BenchError(f"no progress for {STALL_TIMEOUT_S:.0f}s: {self.states()}")
            time.sleep(POLL_S)

    def check(self) -> tuple[int, int, list[str]]:
        """lost, duplicated, and what else is wrong (quantities)."""
        from portal.features.licences.models import LicenceChange, Subscription
        from portal.features.licences.rules import ChangeKind

        total = SUBSCRIPTIONS * CHANGES_PER_SUBSCRIPTION
        problems: list[str] = []
        with self.sessions() as s:
            changes = list(
                s.scalars(select(LicenceChange).where(LicenceChange.kind == ChangeKind.QUANTITY))
            )
            quantities = dict(s.execute(select(Subscription.id, Subscription.quantity)).all())
        if len(changes) != total:
            problems.append(f"{len(changes)} changes recorded, {total} expected")
        lost = sum(1 for c in changes if c.state.value != "provisioned")
        duplicated = sum(1 for c in changes if self.fake.effects(c.request_id) > 1)
        missing = sum(1 for c in changes if self.fake.effects(c.request_id) == 0)
        if missing:
            problems.append(f"{missing} changes without an effect at the fake")
        if self.fake.total_effects != total:
            problems.append(f"the fake counts {self.fake.total_effects} effects, {total} expected")
        final = START_QUANTITY + CHANGES_PER_SUBSCRIPTION
        wrong = 0
        for subscription_id, tenant, ref in self.subscriptions:
            at_fake = (self.fake.subscription(tenant, ref) or {}).get("quantity")
            if at_fake != final or quantities.get(subscription_id) != final:
                wrong += 1
        if wrong:
            problems.append(f"{wrong} subscriptions do not end at {final} seats (fake or portal)")
        return lost, duplicated, problems

    def profile(self, elapsed: float) -> None:
        """Where the time went, from the rows and the fake's request log (stderr)."""
        from portal.features.licences.models import LicenceChange
        from portal.features.licences.rules import ChangeKind
        from portal.outbox.models import OutboxItem

        with self.sessions() as s:
            rows = s.execute(
                select(
                    LicenceChange.requested_at,
                    LicenceChange.effective_at,
                    LicenceChange.finished_at,
                    LicenceChange.attempts,
                    LicenceChange.subscription_id,
                    LicenceChange.sequence,
                ).where(LicenceChange.kind == ChangeKind.QUANTITY)
            ).all()
            kinds = s.execute(
                select(OutboxItem.kind, func.count(), func.sum(OutboxItem.attempts)).group_by(
                    OutboxItem.kind
                )
            ).all()
        attempts = Counter(int(r.attempts) for r in rows)
        log(f"attempts per change: {dict(sorted(attempts.items()))}")
        log(
            "outbox items (kind: items, attempts): "
            + ", ".join(f"{k}: {n}, {a}" for k, n, a in kinds)
        )
        methods = Counter(r.method for r in self.fake.requests)
        per_change = {m: n / len(rows) for m, n in methods.items()}
        log(
            "provider calls: "
            + ", ".join(f"{m} {n} ({per_change[m]:.2f}/change)" for m, n in methods.items())
        )
        calls = sum(methods.values())
        log(
            f"provider-call time: {calls} calls x {LATENCY_S * 1000:.0f} ms / {IN_FLIGHT} slots "
            f"= {calls * LATENCY_S / IN_FLIGHT:.1f} s of the {elapsed:.1f} s "
            f"(slots busy {calls * LATENCY_S / IN_FLIGHT / elapsed:.0%})"
        )
        finished = sorted(r.finished_at for r in rows if r.finished_at is not None)
        if len(finished) > 1:
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(finished)]
            log(f"gap between finishes: median {statistics.median(gaps) * 1000:.1f} ms")
        self.profile_chains(rows, elapsed, self.wall_start)

    @staticmethod
    def profile_chains(rows: Any, elapsed: float, wall_start: datetime) -> None:
        """One subscription's changes run one after the other: the step from one finish to the
        next is a provider call plus the overhead of a change; the first finishes show when
        each chain started (a worker slot takes a chain and runs it to its end)."""
        chains: dict[int, list[Any]] = {}
        for r in sorted(rows, key=lambda r: (r.subscription_id, r.sequence)):
            if r.finished_at is not None:
                chains.setdefault(r.subscription_id, []).append(r.finished_at)
        steps = sorted(
            (b - a).total_seconds() * 1000
            for done in chains.values()
            for a, b in itertools.pairwise(done)
        )
        if len(steps) > 10:
            cuts = statistics.quantiles(steps, n=10)
            log(
                f"step within a chain: median {statistics.median(steps):.1f} ms, "
                f"p90 {cuts[8]:.1f} ms (the call is {LATENCY_S * 1000:.0f} ms)"
            )
        firsts = sorted(done[0] for done in chains.values())
        if steps and firsts:
            # a chain's first change reads the subscription, then writes it: about two steps
            busy = sum((done[-1] - done[0]).total_seconds() for done in chains.values())
            busy += len(chains) * 2 * statistics.median(steps) / 1000
            span = (max(done[-1] for done in chains.values()) - firsts[0]).total_seconds()
            log(
                f"chains kept the {POOL_SIZE} worker processes busy "
                f"{busy / (POOL_SIZE * elapsed):.0%} of the run; the first chain's first finish "
                f"to the last finish: {span:.2f} s"
            )
        if firsts:
            log(
                f"the first {POOL_SIZE} chains' first finishes, seconds after the commit: "
                + " ".join(f"{(f - wall_start).total_seconds():.2f}" for f in firsts[:POOL_SIZE])
            )
            start = firsts[0]
            log(
                "first finishes of the chains, seconds after the earliest: "
                + ", ".join(
                    f"{q:.0%} {(firsts[int(q * (len(firsts) - 1))] - start).total_seconds():.2f}"
                    for q in (0.25, 0.5, 0.75, 1.0)
                )
            )


def main() -> int:
    from partner_center_provider.fake import FakePartnerCenter

    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"bench-provisioning-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    broker = redis.Redis.from_url(REDIS_URL)
    total = SUBSCRIPTIONS * CHANGES_PER_SUBSCRIPTION
    fake = FakePartnerCenter(latency=LATENCY_S, max_quantity=10_000)
    result: tuple[float, int, int] | None = None
    try:
        broker.flushdb()  # db 13 is this benchmark's own
        fake.start()
        env_settings = settings(fake.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTAL_")}
        env.update(env_settings)
        with database(), ExitStack() as stack:
            bench = Bench(fake, env_settings)
            bench.seed()
            log(
                f"{SUBSCRIPTIONS} subscriptions x {CHANGES_PER_SUBSCRIPTION} changes; "
                f"{WORKERS} workers x {THREADS} ({POOL}), {IN_FLIGHT} provider calls at once; "
                f"fake latency {LATENCY_S * 1000:.0f} ms"
            )
            workers = []
            for n in range(WORKERS):
                path = log_dir / f"worker-{n}.log"
                process = stack.enter_context(worker(f"bench-provisioning-{n}", env, path))
                workers.append((process, path))
            for process, path in workers:
                wait_for(functools.partial(ready, process, path), START_TIMEOUT_S, "a worker")
            groups = {process.pid for process, _ in workers}
            cpu, pg, own = cpu_of(groups), postgres_cpu(), own_cpu()
            parents = cpu_of_pids(groups)
            started = bench.record_and_start()
            bench.wait_all(total)
            elapsed = time.perf_counter() - started
            cpu, pg, own = cpu_of(groups) - cpu, postgres_cpu() - pg, own_cpu() - own
            parents = cpu_of_pids(groups) - parents
            log(
                f"all {total} provisioned in {elapsed:.2f} s; CPU per change: workers "
                f"{cpu / total * 1000:.2f} ms (of which the celery parent process "
                f"{parents / total * 1000:.2f} ms), postgres {pg / total * 1000:.2f} ms, this "
                f"process (recording + fake) {own / total * 1000:.2f} ms"
            )
            lost, duplicated, problems = bench.check()
            bench.profile(elapsed)
            most = fake.server.max_in_flight
            log(f"provider calls in flight at the fake: at most {most} ({IN_FLIGHT} allowed)")
            if most > IN_FLIGHT:
                problems.append(f"the fake held {most} calls at once, {IN_FLIGHT} allowed")
            if fake.errors:
                problems.append(f"the fake failed: {fake.errors[0]}")
            if problems:
                raise BenchError("; ".join(problems))
            result = (total / elapsed, lost, duplicated)
    except BenchError as error:
        log(f"FAILED: {error} (worker logs in {log_dir})")
        return 1
    finally:
        fake.stop()
        with suppress(redis.RedisError):
            broker.flushdb()
        broker.close()
        shutil.rmtree(SLOTS_DIR, ignore_errors=True)
    assert result is not None
    rate, lost, duplicated = result
    ratio = rate / LIMIT_PER_S
    print(
        f"bench: provisioning changes_per_s={rate:.0f} limit_per_s={LIMIT_PER_S:.0f} "
        f"ratio={ratio:.3f} lost={lost} duplicated={duplicated}"
    )
    met = ratio >= TARGET_RATIO and lost == 0 and duplicated == 0
    log(f"target ratio>={TARGET_RATIO} lost=0 duplicated=0 {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
