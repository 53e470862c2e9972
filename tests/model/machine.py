"""The money loop as a Hypothesis state machine: customers buy and change licences while the
provider accepts, refuses, fails and drops answers after doing the work, staff put the customer
on credit hold and take it off, retry and resolve failed changes, and workers run the outbox in
any order and die between a handler's work and its commit.

The **reference model** is written from what the provider did, never from the portal's own
records: after every step it reads the fake Partner Center and keeps, per provider subscription,
the quantity it held over time. The invariants compare the portal with that:

- a subscription the portal considers settled has, at the provider and in the portal, the same
  quantity for every part of a bundle, and its change log (the provisioned changes, in the order
  they took effect, each "from → to") walks exactly the provider's timeline: each change starts
  at the quantity the provider held before it, so what is billed and mailed from the log is
  what the provider did;
- nothing reaches the provider while the customer is on credit hold;
- once the outbox is empty and no hold applies, no change is left in flight (queued,
  provisioning, retrying, or awaiting with nothing left to release it);
- the provider holds no subscription the portal lost track of, once every purchase is settled.

Behaviour groups (``licences``, ``billing``, ``payments``) each have their own rules; a test
picks the groups it runs (environment variable ``PORTAL_MODEL_GROUPS``).
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import urlsplit

import sqlalchemy as sa
import time_machine
from dateutil.relativedelta import relativedelta
from flask import Flask
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from partner_center_provider.fake import FakePartnerCenter, Fault
from stripe_payments.fake import DECLINE, REQUIRE_AUTHENTICATION, SUCCEED, FakeStripe

from portal.core.db import get_database, utcnow
from portal.core.errors import ServiceError
from portal.features.billing.models import (
    BillingContract,
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    InvoicePayment,
)
from portal.features.billing.services import queries
from portal.features.billing.services.contracts import create_contract
from portal.features.billing.services.documents import AUTOPAY_KIND, set_invoice_review
from portal.features.billing.services.moves import assign_subscriptions
from portal.features.billing.services.run import run_billing_for_partner
from portal.features.catalogue.models import Product
from portal.features.licences.models import LicenceChange, Subscription
from portal.features.licences.services import provisioning
from portal.features.licences.services.subscriptions import (
    purchase,
    request_quantity,
    set_credit_hold,
)
from portal.features.payments.models import CardSetup
from portal.features.payments.services.cards import finish_card_setup, start_card_setup
from portal.features.payments.services.pay import pay_invoice
from tests.model import world
from tests.model.world import Scene

ALL_GROUPS = frozenset({"licences", "billing", "payments"})

# the states a change is on its way in; every other state is final or is staff's to act on
IN_FLIGHT = frozenset({"awaiting", "queued", "provisioning", "retrying"})
# the provider did what these say (or, rejected, nothing): the log can be checked against it
SETTLED = frozenset({"provisioned", "rejected", "not_applicable"})


START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

# the provider's answers a rule may arrange for the next call; it accepts most of the time
FAULTS = st.sampled_from(["rejects", "fails", "drops the answer after doing it"])
ANSWERS = st.sampled_from(
    ["accepts", "accepts", "rejects", "fails", "drops the answer after doing it"]
)


def _overlap(line: InvoiceLine | CreditNoteLine, begin: date, end: date) -> int:
    """Days of the line's period inside [begin, end)."""
    return max(0, (min(line.period_end, end) - max(line.period_start, begin)).days)


def rules_left_out() -> frozenset[str]:
    """Rules to leave out (``PORTAL_MODEL_WITHOUT=credit_hold,…``): to look for one defect
    while another, already known, would be found first."""
    raw = os.environ.get("PORTAL_MODEL_WITHOUT", "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def groups_from_environment() -> frozenset[str]:
    raw = os.environ.get("PORTAL_MODEL_GROUPS", "")
    if not raw.strip():
        return ALL_GROUPS
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = chosen - ALL_GROUPS
    if unknown:
        raise ValueError(f"PORTAL_MODEL_GROUPS: unknown groups {sorted(unknown)}")
    return chosen


@dataclass
class Reference:
    """What the provider did, observed step by step (independent of the portal's records)."""

    # per provider subscription reference: the quantities it held, one entry per change seen
    timeline: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # the same, with the day each quantity was first seen (the partner's zone is UTC)
    days: dict[str, list[tuple[date, int]]] = field(default_factory=lambda: defaultdict(list))
    on_hold: bool = False

    def observe(self, held: dict[str, int], today: date) -> None:
        for ref, quantity in held.items():
            seen = self.timeline[ref]
            if not seen or seen[-1] != quantity:
                seen.append(quantity)
                self.days[ref].append((today, quantity))

    def seats_on(self, ref: str | None, day: date) -> int:
        """Seats the provider held at the end of ``day`` (what a day is billed for)."""
        held = 0
        for since, quantity in self.days.get(ref or "", []):
            if since > day:
                break
            held = quantity
        return held

    def seat_days(self, ref: str | None, start: date, end: date) -> int:
        total, day = 0, start
        while day < end:
            total += self.seats_on(ref, day)
            day += timedelta(days=1)
        return total


class MoneyLoop(RuleBasedStateMachine):
    """The loop; the app, the fake and the groups are set by the test before it runs."""

    app: ClassVar[Flask]
    fake: ClassVar[FakePartnerCenter]
    stripe: ClassVar[FakeStripe | None] = None
    groups: ClassVar[frozenset[str]] = ALL_GROUPS
    left_out: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self.reference = Reference()
        self.scene: Scene | None = None
        # the journey runs on a clock of its own, moved forward a day (or a month) at a time
        self.traveller = time_machine.travel(START, tick=True)
        self.clock: time_machine.Coordinates | None = None
        self.contract_id: int | None = None
        self.first_day = START.date()
        self.next_period = self.first_day + relativedelta(months=1)
        self.billed: list[date] = []  # the period starts billed so far
        self.delivered: set[str] = set()  # Stripe events delivered at least once
        self.disputed: set[str] = set()
        self.lost: dict[str, int] = {}  # payment intent -> amount a lost dispute took back

    # -- the scene ------------------------------------------------------------------------------

    @initialize(first=st.integers(1, 20), autocharge=st.booleans())
    def start_from_an_empty_database(self, first: int, autocharge: bool) -> None:
        self.clock = self.traveller.start()
        world.empty_database(self.app)
        self.fake.clear_faults()
        if self.stripe is not None:
            world.forget_everything(self.stripe)
        self.scene = world.set_the_scene(self.app, self.fake)
        if self.billing():
            with world.service_session(self.app) as s:
                who = world.parties(s, self.scene)
                contract = create_contract(
                    s,
                    who.customer,
                    name="Licences",
                    currency="USD",
                    frequency="monthly",
                    anchor_on=self.first_day,
                    by="finance@model",
                    # autopay: each invoice issued is charged to the default card, if one is
                    # saved (rule save_a_card), beside the customer's own Pay now
                    autocharge=autocharge and self.payments(),
                )
                s.commit()
                self.contract_id = contract.id
                # invoices go out as the run makes them (no draft review by staff)
                set_invoice_review(s, who.partner, False, "finance@model")
                s.commit()
        self.observe()
        if self.licences():
            # the customer starts with a subscription (bought through the use case, provisioned
            # by the outbox): changes have something to change from the first step, and the
            # months something to bill and to pay
            self.buy(False, first)
            self.settle()
        self.observe()

    @property
    def the_stripe(self) -> FakeStripe:
        assert self.stripe is not None
        return self.stripe

    @property
    def the_scene(self) -> Scene:
        assert self.scene is not None
        return self.scene

    def observe(self) -> None:
        held = world.provider_quantities(self.fake, self.the_scene.tenant)
        self.reference.observe(held, utcnow().date())

    def licences(self) -> bool:
        return "licences" in self.groups

    def may(self, rule_name: str) -> bool:
        return rule_name not in self.left_out

    def billing(self) -> bool:
        return "billing" in self.groups

    # -- licences: the customer -------------------------------------------------------------------

    @precondition(lambda self: self.licences() and self.may("buy"))
    @rule(bundle=st.booleans(), quantity=st.integers(1, 20), answer=ANSWERS)
    def buy_and_the_provider_answers(self, bundle: bool, quantity: int, answer: str) -> None:
        """A purchase, and how the provider will answer the next order (the worker may take
        another purchase first)."""
        self.provider_will("order", answer)
        self.buy(bundle, quantity)

    def buy(self, bundle: bool, quantity: int) -> None:
        scene = self.the_scene
        with world.service_session(self.app) as s:
            who = world.parties(s, scene)
            product_id = scene.bundle_product_id if bundle else scene.single_product_id
            product = s.get_one(Product, product_id)
            try:
                bought = purchase(s, who.partner, who.customer, product, quantity, who.user)
            except ServiceError:
                s.rollback()
                return
            s.commit()
            if self.contract_id is not None:
                # finance puts it on the customer's contract at once
                contract = s.get_one(BillingContract, self.contract_id)
                assign_subscriptions(s, contract, [bought.id], "finance@model")
                s.commit()

    @precondition(lambda self: self.licences())
    @rule(which=st.integers(0, 7), quantity=st.integers(1, 30), answer=ANSWERS)
    def request_change_and_the_provider_answers(
        self, which: int, quantity: int, answer: str
    ) -> None:
        """A quantity change, and how the provider will answer the next one (the worker may
        take another change first)."""
        self.provider_will("quantity", answer)
        self.request_change(which, quantity)

    def request_change(self, which: int, quantity: int) -> None:
        """A quantity change, whatever else is on its way (the page shows the latest version)."""
        scene = self.the_scene
        with world.service_session(self.app) as s:
            who = world.parties(s, scene)
            candidates = [
                sub
                for sub in world.subscriptions_of(self.app, scene.customer_id)
                if sub.parent_id is None
            ]
            if not candidates:
                return
            subscription = s.get_one(Subscription, candidates[which % len(candidates)].id)
            try:
                request_quantity(
                    s,
                    who.partner,
                    who.customer,
                    subscription,
                    quantity,
                    subscription.version,
                    who.user,
                )
            except ServiceError:
                s.rollback()
                return
            s.commit()

    # -- licences: the provider -----------------------------------------------------------------

    @precondition(lambda self: self.licences() and self.may("provider_will"))
    @rule(call=st.sampled_from(["order", "quantity"]), outcome=FAULTS)
    def provider_will(self, call: str, outcome: str) -> None:
        """The provider's next answer to a purchase (order) or a quantity change (otherwise it
        accepts)."""
        if outcome == "accepts" or not self.may("provider_will"):
            return
        if not self.may(
            f"{call}_{outcome.split()[0]}"
        ):  # e.g. PORTAL_MODEL_WITHOUT=quantity_rejects
            return
        method, path = ("POST", "/orders") if call == "order" else ("PATCH", "/subscriptions/")
        if outcome == "rejects":
            fault = Fault.business(400, 800045, "Refused by the model", method=method, path=path)
        elif outcome == "fails":
            fault = Fault.server_error(503, method=method, path=path)
        else:
            fault = Fault.drop_after_effect(method=method, path=path)
        self.fake.inject(fault)

    # -- licences: staff --------------------------------------------------------------------------

    @precondition(lambda self: self.licences() and self.may("credit_hold"))
    @rule(on=st.booleans())
    def credit_hold(self, on: bool) -> None:
        scene = self.the_scene
        with world.service_session(self.app) as s:
            who = world.parties(s, scene)
            set_credit_hold(s, who.partner, who.customer, on, "finance@model", "model")
        self.reference.on_hold = on

    @precondition(lambda self: self.licences() and self.may("staff_act_on_a_failed_change"))
    @rule(which=st.integers(0, 7), resolve=st.booleans())
    def staff_act_on_a_failed_change(self, which: int, resolve: bool) -> None:
        """Staff retry a failed change, or resolve it by hand saying truthfully what the
        provider did (they look at the provider first); a purchase is always retried."""
        scene = self.the_scene
        failed = [c for c in world.changes_of(self.app, scene.customer_id) if c.state == "failed"]
        if not failed:
            return
        chosen = failed[which % len(failed)]
        held = world.provider_quantities(self.fake, scene.tenant)
        with world.service_session(self.app) as s:
            who = world.parties(s, scene)
            change = s.get_one(LicenceChange, chosen.id)
            try:
                if resolve and change.kind != "purchase":
                    parts = [change.subscription, *change.subscription.children]
                    at_provider = {held.get(part.provider_ref or "", 0) for part in parts}
                    if len(at_provider) != 1:
                        provisioning.retry(s, who.partner, change, who.staff)
                    else:
                        applied = at_provider == {change.quantity_to}
                        note = "checked at the provider"
                        provisioning.resolve(
                            s, who.partner, change, who.staff, applied=applied, note=note
                        )
                else:
                    provisioning.retry(s, who.partner, change, who.staff)
            except ServiceError:
                s.rollback()
                return
            s.commit()

    # -- the outbox -------------------------------------------------------------------------------

    @rule(which=st.integers(0, 15), dies=st.booleans())
    def a_worker_runs_an_item(self, which: int, dies: bool) -> None:
        """A worker takes any claimable item (leases and backoffs over), and perhaps dies after
        its handler did the work but before the commit that records it."""
        world.make_time_pass(self.app)
        ids = world.claimable(self.app)
        if not ids:
            return
        item_id = ids[which % len(ids)]
        effects = self.fake.total_effects
        if dies and self.may("crash"):
            world.crash(self.app, item_id)
        else:
            world.run(self.app, item_id)
        self.observe()
        if self.reference.on_hold:
            assert self.fake.total_effects == effects, (
                "a change reached the provider while the customer was on credit hold"
            )

    @rule()
    def everything_settles(self) -> None:
        """Quiescence: the provider answers normally again and workers run until the outbox
        is empty; then nothing may be left in flight."""
        self.settle()

    @rule()
    def the_periodic_jobs_run(self) -> None:
        """The scheduler's sweeps, between any two steps of the workers."""
        world.periodic_jobs(self.app)
        self.observe()

    def settle(self) -> None:
        self.fake.clear_faults()
        effects = self.fake.total_effects
        waiting = world.drain(self.app)
        self.observe()
        if self.reference.on_hold:
            assert self.fake.total_effects == effects, (
                "a change reached the provider while the customer was on credit hold"
            )
        unfinished = world.unfinished_items(self.app)
        # only an automatic payment may wait, while someone pays on the checkout page
        assert set(unfinished) <= waiting, f"outbox items left unfinished: {unfinished}"
        assert set(unfinished.values()) <= {AUTOPAY_KIND}, f"items left waiting: {unfinished}"
        self.check_nothing_in_flight()

    def teardown(self) -> None:
        try:
            if self.scene is not None:
                self.settle()
                self.check_provider_matches_portal()
                self.check_no_orphan_at_provider()
                if self.payments():
                    self.settle_payments()
                    self.check_payments(quiescent=True)
                if os.environ.get("PORTAL_MODEL_TRACE"):
                    self.trace()
        finally:
            if self.clock is not None:
                self.traveller.stop()

    def trace(self) -> None:
        """One line per journey (``PORTAL_MODEL_TRACE=1``): what it got to."""
        states = defaultdict(int)
        for change in world.changes_of(self.app, self.the_scene.customer_id):
            states[f"{change.kind}:{change.state}"] += 1
        with get_database(self.app).sessions() as s:
            invoices = s.scalar(sa.select(sa.func.count(Invoice.id))) or 0
            payments = s.scalar(sa.select(sa.func.count(InvoicePayment.id))) or 0
        events = len(self.stripe.events) if self.stripe is not None else 0
        print(
            f"journey: {dict(states)} runs={len(self.billed)} invoices={invoices} "
            f"payments={payments} stripe_events={events}"
        )

    # -- billing --------------------------------------------------------------------------------

    def end_of_day(self) -> None:
        """Before the day ends everything settles and the service desk clears its queue
        (truthfully): a change the provider applied is recorded the day it was applied."""
        for _ in range(3):
            self.settle()
            failed = [
                c
                for c in world.changes_of(self.app, self.the_scene.customer_id)
                if c.state == "failed"
            ]
            if not failed:
                return
            for index in range(len(failed)):
                self.staff_act_on_a_failed_change(index, resolve=True)

    @precondition(lambda self: self.billing())
    @rule(days=st.integers(1, 9))
    def days_pass(self, days: int) -> None:
        self.end_of_day()
        today = utcnow().date()
        left = (self.next_period - today).days - 1  # the billing run moves onto its day
        if left > 0:
            self.move_to(today + timedelta(days=min(days, left)))

    def move_to(self, day: date) -> None:
        assert self.clock is not None
        self.clock.move_to(datetime.combine(day, time(8, 0), tzinfo=UTC))
        self.observe()

    @precondition(lambda self: self.billing())
    @rule()
    def run_billing_for_the_next_period(self) -> None:
        """The day the next contract period starts: the billing run; the period before it is
        then closed."""
        self.end_of_day()
        starts = self.next_period
        if utcnow().date() < starts:
            self.move_to(starts)
        with self.app.app_context():
            run_billing_for_partner(self.the_scene.partner_id, starts, "model", app=self.app)
        self.billed.append(starts)
        self.next_period = starts + relativedelta(months=1)
        self.check_closed_periods()

    def check_closed_periods(self) -> None:
        """For every closed period, per subscription: the seats billed, day by day (advance
        and prorated additions on invoices, less prorated reductions on credit notes), are the
        seats the provider held, day by day."""
        starts = [self.first_day, *self.billed]
        with get_database(self.app).sessions() as s:
            charged = (
                s.execute(
                    sa.select(InvoiceLine).where(
                        InvoiceLine.customer_id == self.the_scene.customer_id,
                        InvoiceLine.subscription_id.is_not(None),
                    )
                )
                .scalars()
                .all()
            )
            credited = (
                s.execute(
                    sa.select(CreditNoteLine).where(
                        CreditNoteLine.customer_id == self.the_scene.customer_id,
                        CreditNoteLine.subscription_id.is_not(None),
                    )
                )
                .scalars()
                .all()
            )
            parents = [
                sub
                for sub in world.subscriptions_of(self.app, self.the_scene.customer_id)
                if sub.parent_id is None
            ]
        for begin, end in itertools.pairwise(starts):
            for parent in parents:
                billed = Decimal(0)
                for line in charged:
                    if line.subscription_id == parent.id and str(line.kind) != "discount":
                        billed += abs(line.quantity) * _overlap(line, begin, end)
                for line in credited:
                    if line.subscription_id == parent.id and str(line.kind) != "discount":
                        billed -= abs(line.quantity) * _overlap(line, begin, end)
                held = self.reference.seat_days(parent.provider_ref, begin, end)
                assert billed == held, (
                    f"period {begin} to {end}, subscription {parent.id}: {billed} seat-days billed,"
                    f" "
                    f"the provider held {held} (its timeline: "
                    f"{self.reference.days.get(parent.provider_ref or '', [])})"
                )

    # -- payments -------------------------------------------------------------------------------

    def payments(self) -> bool:
        return "payments" in self.groups and self.stripe is not None

    def issued_invoices(self) -> list[Invoice]:
        with get_database(self.app).sessions() as s:
            return list(
                s.scalars(
                    sa.select(Invoice)
                    .where(
                        Invoice.customer_id == self.the_scene.customer_id,
                        Invoice.state == "issued",
                    )
                    .order_by(Invoice.id)
                )
            )

    @precondition(lambda self: self.payments())
    @rule(
        which=st.integers(0, 3),
        share=st.sampled_from(["all", "half", "a little"]),
        clicks=st.integers(1, 2),
    )
    def pay_now(self, which: int, share: str, clicks: int) -> None:
        self.click_pay_now(which, share, clicks)

    def click_pay_now(self, which: int, share: str, clicks: int) -> str | None:
        """The Finance Manager pays (part of) an invoice by card: "Pay now", perhaps clicked
        twice; another amount replaces the open checkout. Returns the checkout session the
        last click was sent to, if any."""
        invoices = self.issued_invoices()
        if not invoices:
            return None
        invoice_id = invoices[which % len(invoices)].id
        sent_to = None
        for _ in range(clicks):
            with world.service_session(self.app) as s:
                who = world.parties(s, self.the_scene)
                detail = queries.invoice_detail(s, invoice_id, today=utcnow().date())
                if detail is None or detail.balance_minor <= 0:
                    return sent_to
                balance = detail.balance_minor
                wanted = {"all": balance, "half": max(balance // 2, 100), "a little": 100}[share]
                wanted = min(wanted, balance)
                try:
                    started = pay_invoice(
                        s,
                        partner=who.partner,
                        invoice_id=invoice_id,
                        role="finance_manager",
                        actor=who.user.email,
                        amount=Decimal(wanted).scaleb(-2),
                        return_url=lambda attempt: f"https://portal.test/pay/{attempt}",
                        today=utcnow().date(),
                    )
                except ServiceError:
                    s.rollback()
                    continue
                if started.redirect_url is not None:
                    sent_to = urlsplit(started.redirect_url).path.rsplit("/", 1)[-1]
        return sent_to

    @precondition(lambda self: self.payments())
    @rule(
        which=st.integers(0, 3),
        share=st.sampled_from(["all", "half", "a little"]),
        card=st.sampled_from([SUCCEED, DECLINE]),
    )
    def pay_by_card(self, which: int, share: str, card: str) -> None:
        """The usual way: "Pay now", then the card on Stripe's page at once."""
        session = self.click_pay_now(which, share, 1)
        if session is not None and self.checkout_is_open(session):
            self.the_stripe.complete_checkout(session, card)

    def checkout_is_open(self, session_id: str) -> bool:
        stripe = self.the_stripe
        with stripe._lock:
            session = stripe.sessions[session_id]
            return bool(
                session["mode"] == "payment"
                and session["status"] == "open"
                and stripe.clock() < session["expires_at"]  # not past its time (days pass)
            )

    @precondition(lambda self: self.payments())
    @rule(card=st.sampled_from([SUCCEED, DECLINE, REQUIRE_AUTHENTICATION]))
    def save_a_card(self, card: str) -> None:
        """The Finance Manager saves a card on Stripe's page (the first becomes the default
        autopay charges): one that pays, one the bank declines off-session, one that asks
        for authentication."""
        stripe = self.the_stripe
        with world.service_session(self.app) as s:
            who = world.parties(s, self.the_scene)
            try:
                start_card_setup(
                    s,
                    partner=who.partner,
                    customer=who.customer,
                    actor=who.user.email,
                    return_url=lambda setup: f"https://portal.test/cards/{setup}",
                    role="finance_manager",
                )
            except ServiceError:
                s.rollback()
                return
            setup = s.scalars(sa.select(CardSetup).order_by(CardSetup.id.desc()).limit(1)).one()
            assert setup.gateway_ref is not None
            stripe.complete_setup(setup.gateway_ref, card)
            finish_card_setup(s, who.partner, setup, who.user.email)

    @precondition(lambda self: self.payments())
    @rule(which=st.integers(0, 5), declined=st.booleans())
    def the_customer_completes_a_checkout(self, which: int, declined: bool) -> None:
        """On Stripe's page, with a card that pays or is declined (any open session: also one
        the portal replaced)."""
        stripe = self.the_stripe
        with stripe._lock:
            open_sessions = [sid for sid in stripe.sessions if self.checkout_is_open(sid)]
        if not open_sessions:
            return
        stripe.complete_checkout(
            open_sessions[which % len(open_sessions)], "decline" if declined else "succeed"
        )

    @precondition(lambda self: self.payments())
    @rule(data=st.data())
    def stripe_delivers_webhooks(self, data: st.DataObject) -> None:
        """Some of the events so far, in any order, some twice (Stripe retries, and does not
        keep the order)."""
        events = list(self.the_stripe.events)
        if not events:
            return
        chosen = data.draw(
            st.lists(st.sampled_from(range(len(events))), min_size=1, max_size=8),
            label="events (their indexes)",
        )
        for index in chosen:
            self.deliver(events[index])

    def deliver(self, event: dict[str, Any]) -> None:
        body, headers = self.the_stripe.delivery(event)
        client = self.app.test_client()
        answer = client.post("/p/stripe/webhook", data=body, headers=headers)
        assert answer.status_code < 500 or answer.status_code == 503, answer.status_code
        self.delivered.add(str(event["id"]))

    def paid_intents(self) -> list[dict[str, Any]]:
        with self.the_stripe._lock:
            return [
                dict(intent)
                for intent in self.the_stripe.intents.values()
                if intent["status"] == "succeeded"
            ]

    @precondition(lambda self: self.payments())
    @rule(which=st.integers(0, 5), whole=st.booleans())
    def stripe_refunds(self, which: int, whole: bool) -> None:
        """Staff refund (part of) a payment in Stripe's dashboard."""
        intents = self.paid_intents()
        if not intents:
            return
        intent = intents[which % len(intents)]
        charge = self.the_stripe.charges[str(intent["latest_charge"])]
        left = int(charge["amount"]) - int(charge["amount_refunded"])
        if left <= 0 or str(intent["id"]) in self.lost:
            return  # nothing left, or charged back (Stripe refuses: charge_disputed)
        self.the_stripe.refund(str(intent["id"]), None if whole else max(1, left // 3))

    @precondition(lambda self: self.payments())
    @rule(which=st.integers(0, 5), lost=st.booleans())
    def a_bank_disputes_a_payment(self, which: int, lost: bool) -> None:
        """The card holder's bank disputes a payment; the dispute closes won or lost."""
        intents = [i for i in self.paid_intents() if str(i["id"]) not in self.disputed]
        if not intents:
            return
        intent = intents[which % len(intents)]
        charge = self.the_stripe.charges[str(intent["latest_charge"])]
        if charge["amount_refunded"] >= charge["amount"]:
            return  # refunded in full: nothing left to dispute
        dispute = self.the_stripe.dispute(str(intent["id"]))
        self.disputed.add(str(intent["id"]))
        self.the_stripe.close_dispute(str(dispute["id"]), "lost" if lost else "won")
        if lost:
            self.lost[str(intent["id"])] = int(dispute["amount"])

    def settle_payments(self) -> None:
        """Stripe's webhooks all arrive in the end; the outbox runs."""
        for event in list(self.the_stripe.events):
            if str(event["id"]) not in self.delivered:
                self.deliver(event)
        self.settle()

    def check_payments(self, quiescent: bool) -> None:
        """Per invoice: what Stripe charged for it and kept (less refunds and lost disputes)
        never exceeds its total; once every webhook arrived, each charge is recorded exactly
        once and the balance is its total, less credits, less what was paid, plus what was
        refunded and what disputes took back."""
        charged: dict[int, int] = defaultdict(int)
        refunded: dict[int, int] = defaultdict(int)
        taken_back: dict[int, int] = defaultdict(int)
        intents: dict[str, int] = {}  # payment intent -> invoice
        for intent in self.paid_intents():
            invoice_id = int(intent["metadata"]["invoice_ref"])
            charge = self.the_stripe.charges[str(intent["latest_charge"])]
            charged[invoice_id] += int(charge["amount"])
            refunded[invoice_id] += int(charge["amount_refunded"])
            # a lost dispute takes back what was still paid (not what was refunded already)
            still_paid = int(charge["amount"]) - int(charge["amount_refunded"])
            taken_back[invoice_id] += min(self.lost.get(str(intent["id"]), 0), still_paid)
            intents[str(intent["id"])] = invoice_id
        with get_database(self.app).sessions() as s:
            invoices = {
                invoice.id: invoice
                for invoice in s.scalars(
                    sa.select(Invoice).where(Invoice.customer_id == self.the_scene.customer_id)
                )
            }
            for invoice_id, amount in charged.items():
                # what the cards gave and kept: a refund or a lost dispute opens the balance
                # again, and paying it again is right
                kept = amount - refunded[invoice_id] - taken_back[invoice_id]
                total = invoices[invoice_id].total_minor
                assert kept <= total, (
                    f"invoice {invoice_id} (total {total}): cards were charged {amount}, "
                    f"{refunded[invoice_id]} refunded, {taken_back[invoice_id]} taken back by "
                    f"disputes: {kept} kept"
                )
            if not quiescent:
                return
            payments = s.scalars(
                sa.select(InvoicePayment).where(
                    InvoicePayment.customer_id == self.the_scene.customer_id,
                    InvoicePayment.kind != "refund",
                )
            ).all()
            recorded: dict[str, int] = defaultdict(int)
            for payment in payments:
                recorded[payment.gateway_reference] += 1
            for intent_id, invoice_id in intents.items():
                assert recorded.get(intent_id) == 1, (
                    f"the charge {intent_id} for invoice {invoice_id} is recorded "
                    f"{recorded.get(intent_id, 0)} times"
                )
            unknown = set(recorded) - set(intents)
            assert not unknown, f"payments recorded that Stripe never took: {sorted(unknown)}"
            today = utcnow().date()
            for invoice_id, invoice in invoices.items():
                if invoice.state != "issued":
                    continue
                detail = queries.invoice_detail(s, invoice_id, today=today)
                assert detail is not None
                credited = int(
                    s.scalar(
                        sa.select(sa.func.coalesce(sa.func.sum(CreditNote.total_minor), 0)).where(
                            CreditNote.invoice_id == invoice_id, CreditNote.state == "issued"
                        )
                    )
                    or 0
                )
                expected = (
                    invoice.total_minor
                    - credited
                    - charged[invoice_id]
                    + refunded[invoice_id]
                    + taken_back[invoice_id]
                )
                assert detail.balance_minor == expected, (
                    f"invoice {invoice_id}: balance {detail.balance_minor}, expected {expected} "
                    f"(total {invoice.total_minor}, credited {credited}, charged "
                    f"{charged[invoice_id]}, refunded {refunded[invoice_id]}, lost in disputes "
                    f"{taken_back[invoice_id]})"
                )

    @invariant()
    def card_charges_never_exceed_the_invoice(self) -> None:
        if self.scene is not None and self.payments():
            self.check_payments(quiescent=False)

    @invariant()
    def every_document_adds_up(self) -> None:
        """Every invoice's (and credit note's) lines add up to its subtotal, and subtotal plus
        tax is its total."""
        if self.scene is None or not self.billing():
            return
        with get_database(self.app).sessions() as s:
            for model, line_model, key in (
                (Invoice, InvoiceLine, InvoiceLine.invoice_id),
                (CreditNote, CreditNoteLine, CreditNoteLine.credit_note_id),
            ):
                sums = dict(
                    s.execute(
                        sa.select(key, sa.func.sum(line_model.amount_minor)).group_by(key)
                    ).all()
                )
                for document in s.scalars(sa.select(model)):
                    lines = int(sums.get(document.id, 0) or 0)
                    assert lines == document.subtotal_minor, (
                        f"{model.__name__} {document.id}: lines add up to {lines}, "
                        f"its subtotal is {document.subtotal_minor}"
                    )
                    assert document.subtotal_minor + document.tax_minor == document.total_minor

    # -- invariants -------------------------------------------------------------------------------

    def check_nothing_in_flight(self) -> None:
        by_subscription: dict[int, list[LicenceChange]] = defaultdict(list)
        for change in world.changes_of(self.app, self.the_scene.customer_id):
            by_subscription[change.subscription_id].append(change)
        for changes in by_subscription.values():
            for index, change in enumerate(changes):
                state = str(change.state)
                if state not in IN_FLIGHT:
                    continue
                if state == "awaiting":
                    # held by the credit hold, or behind a change staff must act on first
                    behind_staff = any(
                        str(earlier.state) not in IN_FLIGHT | SETTLED for earlier in changes[:index]
                    )
                    if self.reference.on_hold or behind_staff:
                        continue
                raise AssertionError(
                    f"change {change.id} ({change.kind} {change.quantity_from}→"
                    f"{change.quantity_to}) is left {state!r} with the outbox empty and "
                    f"{'a' if self.reference.on_hold else 'no'} credit hold "
                    f"(answer: {change.provider_answer!r})"
                )

    @invariant()
    def check_provider_matches_portal(self) -> None:
        """Every settled subscription: the provider's quantity is the portal's, for each part
        of a bundle, and its change log walks the provider's timeline."""
        if self.scene is None:
            return
        held = world.provider_quantities(self.fake, self.the_scene.tenant)
        changes: dict[int, list[LicenceChange]] = defaultdict(list)
        for change in world.changes_of(self.app, self.the_scene.customer_id):
            changes[change.subscription_id].append(change)
        subscriptions = world.subscriptions_of(self.app, self.the_scene.customer_id)
        for parent in (sub for sub in subscriptions if sub.parent_id is None):
            log = changes.get(parent.id, [])
            if any(str(change.state) not in SETTLED for change in log):
                continue  # on its way, or staff's to act on
            parts = [parent, *(sub for sub in subscriptions if sub.parent_id == parent.id)]
            for part in parts:
                if part.provider_ref is None:
                    continue
                assert held.get(part.provider_ref) == part.quantity, (
                    f"subscription {part.id} ({part.provider_ref}): the provider holds "
                    f"{held.get(part.provider_ref)} seats, the portal says {part.quantity}"
                )
            if parent.provider_ref is None:
                continue
            self.check_log_walks_the_timeline(parent, log)

    def check_log_walks_the_timeline(self, parent: Subscription, log: list[LicenceChange]) -> None:
        """The provisioned changes, in the order they took effect, go from 0 through the
        quantities the provider held: each starts where the provider was before it (what the
        invoice and the customer's mail say is what the provider did)."""
        applied = sorted(
            (change for change in log if str(change.state) == "provisioned"),
            key=lambda change: (change.effective_at, change.sequence),
        )
        timeline = self.reference.timeline.get(parent.provider_ref or "", [])
        walked = 0
        for change in applied:
            assert change.quantity_from == walked, (
                f"change {change.id} of subscription {parent.id} says "
                f"{change.quantity_from}→{change.quantity_to}, but the provider held {walked} "
                f"seats before it (provider timeline {timeline}): "
                f"{change.quantity_to - change.quantity_from:+d} seats billed for a change of "
                f"{change.quantity_to - walked:+d}"
            )
            walked = change.quantity_to
        assert walked == (timeline[-1] if timeline else 0), (
            f"subscription {parent.id}: its log ends at {walked} seats, the provider holds "
            f"{timeline[-1] if timeline else 0} (timeline {timeline})"
        )

    def check_no_orphan_at_provider(self) -> None:
        """Once every purchase is settled, each subscription the provider has is one the portal
        knows (a bundle half bought must not be forgotten)."""
        changes = world.changes_of(self.app, self.the_scene.customer_id)
        if any(c.kind == "purchase" and str(c.state) not in SETTLED for c in changes):
            return
        known = {
            sub.provider_ref
            for sub in world.subscriptions_of(self.app, self.the_scene.customer_id)
            if sub.provider_ref
        }
        at_provider = set(world.provider_quantities(self.fake, self.the_scene.tenant))
        orphans = at_provider - known
        assert not orphans, f"the provider has subscriptions the portal lost: {sorted(orphans)}"
