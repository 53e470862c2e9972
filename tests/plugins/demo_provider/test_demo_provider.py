"""The demo provider beyond the contract: delays, failure and rejection shares decided from the
request id, the quantity rules, concurrency, its own tables and its imports."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from demo_provider import MIGRATIONS
from demo_provider.adapter import (
    DemoProvider,
    DemoProviderSettings,
    fails_technically,
    rejected_by_rule,
)
from demo_provider.models import DemoProviderBase, DemoRequest, DemoSubscription
from flask import Flask

from portal import create_app
from portal.core.db import Base, get_database
from portal.integrations.providers import QuantityChange
from portal.integrations.registry import PluginError, integrations
from portal.integrations.results import BusinessRejection, Succeeded, TechnicalFailure
from portal.testing.support import app_config, private_portal_imports

PLUGIN_PACKAGE = Path(MIGRATIONS).parent


def change(request_id: str, quantity: int = 5, ref: str = "sub-1") -> QuantityChange:
    return QuantityChange(request_id, "tenant-1", ref, quantity)


def adapter_on(app: Flask, sleeps: list[float] | None = None, **settings: float) -> DemoProvider:
    """A second demo provider on the app's tables, with its own settings."""
    record = sleeps if sleeps is not None else []
    return DemoProvider(
        get_database(app).engine,
        DemoProviderSettings(**{"delay_seconds": 0.0, **settings}),
        sleep=record.append,
    )


def stored(app: Flask, request_id: str) -> DemoRequest:
    with get_database(app).sessions() as session:
        row = session.get(DemoRequest, request_id)
        assert row is not None
        return row


def version_of(app: Flask, ref: str = "sub-1") -> int:
    with get_database(app).sessions() as session:
        return int(
            session.scalars(
                sa.select(DemoSubscription.version).where(DemoSubscription.subscription_ref == ref)
            ).one()
        )


# -- idempotency -------------------------------------------------------------------------------


def test_a_repeated_request_returns_the_recorded_result_with_one_effect(portal_app: Flask) -> None:
    provider = integrations(portal_app).providers.get("demo")
    first = provider.set_quantity(change("r-1", 5))
    assert first == provider.set_quantity(change("r-1", 5))
    assert version_of(portal_app) == 1
    assert stored(portal_app, "r-1").attempts == 1  # the repeat was answered from the record


def test_concurrent_deliveries_of_one_request_apply_it_once(portal_app: Flask) -> None:
    provider = integrations(portal_app).providers.get("demo")
    results: list[object] = []
    barrier = threading.Barrier(6)

    def deliver() -> None:
        barrier.wait()
        results.append(provider.set_quantity(change("r-concurrent", 9)))

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6
    assert all(r == results[0] for r in results), results
    assert isinstance(results[0], Succeeded) and results[0].value.quantity == 9
    assert version_of(portal_app) == 1


def test_a_request_id_reused_for_another_change_is_refused(portal_app: Flask) -> None:
    provider = integrations(portal_app).providers.get("demo")
    assert isinstance(provider.set_quantity(change("r-1", 5)), Succeeded)
    reused = provider.set_quantity(change("r-1", 6))
    assert isinstance(reused, BusinessRejection) and reused.code == "demo.request_id_reused"
    read = provider.get_subscription("tenant-1", "sub-1")
    assert isinstance(read, Succeeded) and read.value.quantity == 5


# -- delay ---------------------------------------------------------------------------------------


def test_it_provisions_after_a_short_delay_and_repeats_answer_at_once(portal_app: Flask) -> None:
    assert DemoProviderSettings.from_settings({}).delay_seconds == 2
    sleeps: list[float] = []
    provider = adapter_on(portal_app, sleeps, delay_seconds=1.5)
    provider.set_quantity(change("r-1"))
    provider.set_quantity(change("r-1"))
    assert sleeps == [1.5]


@pytest.mark.parametrize("demo_settings", [{"DELAY_SECONDS": "0.3"}])
def test_the_delay_comes_from_the_setting(portal_app: Flask, demo_settings: dict[str, str]) -> None:
    provider = integrations(portal_app).providers.get("demo")
    assert isinstance(provider, DemoProvider)
    assert provider.settings.delay_seconds == pytest.approx(0.3)


# -- failures and rejections -----------------------------------------------------------------


@pytest.mark.parametrize("demo_settings", [{"DELAY_SECONDS": "0", "FAILURE_RATE": "1.0"}])
def test_failure_rate_one_always_fails_technically_and_changes_nothing(
    portal_app: Flask, demo_settings: dict[str, str]
) -> None:
    provider = integrations(portal_app).providers.get("demo")
    for attempt in range(1, 4):
        result = provider.set_quantity(change("r-1"))
        assert isinstance(result, TechnicalFailure)
        assert result.retry_after == timedelta(seconds=5)
        assert stored(portal_app, "r-1").attempts == attempt
    missing = provider.get_subscription("tenant-1", "sub-1")
    assert isinstance(missing, BusinessRejection) and missing.code == "demo.not_found"


def test_a_retry_of_a_technically_failed_request_can_succeed(portal_app: Flask) -> None:
    failing = adapter_on(portal_app, failure_rate=1.0, rejection_rate=0)
    assert isinstance(failing.set_quantity(change("r-1")), TechnicalFailure)
    healthy = adapter_on(portal_app, failure_rate=0, rejection_rate=0)
    result = healthy.set_quantity(change("r-1"))
    assert isinstance(result, Succeeded) and result.value.quantity == 5
    assert stored(portal_app, "r-1").attempts == 2
    assert failing.set_quantity(change("r-1")) == result  # final now, whatever the dice say


def test_the_dice_depend_on_the_request_id_and_the_attempt(portal_app: Flask) -> None:
    # a request whose first attempt fails and whose second succeeds, at a 50 % failure rate
    request_id = next(
        f"r-{n}"
        for n in range(1000)
        if fails_technically(f"r-{n}", 1, 0.5)
        and not fails_technically(f"r-{n}", 2, 0.5)
        and not rejected_by_rule(f"r-{n}", 0.05)
    )
    provider = adapter_on(portal_app, failure_rate=0.5, rejection_rate=0.05)
    assert isinstance(provider.set_quantity(change(request_id)), TechnicalFailure)
    assert isinstance(provider.set_quantity(change(request_id)), Succeeded)


@pytest.mark.parametrize("demo_settings", [{"DELAY_SECONDS": "0", "REJECTION_RATE": "1.0"}])
def test_rejection_rate_one_always_rejects_by_the_demo_rules(
    portal_app: Flask, demo_settings: dict[str, str]
) -> None:
    provider = integrations(portal_app).providers.get("demo")
    result = provider.set_quantity(change("r-1"))
    assert result == BusinessRejection(
        "Quantity not allowed by the demo rules", code="demo.rejected"
    )
    # final: the same request answers the same even once the rule would let it through
    assert adapter_on(portal_app, rejection_rate=0).set_quantity(change("r-1")) == result
    assert stored(portal_app, "r-1").outcome == "rejected"


def test_default_shares_of_failures_and_rejections(portal_app: Flask) -> None:
    settings = DemoProviderSettings.from_settings({"DELAY_SECONDS": "0"})
    assert (settings.failure_rate, settings.rejection_rate) == (0.1, 0.05)
    provider = DemoProvider(get_database(portal_app).engine, settings)
    results = [provider.set_quantity(change(f"r-{n}", ref=f"sub-{n}")) for n in range(200)]
    failures = sum(isinstance(r, TechnicalFailure) for r in results)
    rejections = sum(isinstance(r, BusinessRejection) for r in results)
    assert 10 <= failures <= 30, failures  # about 10 %
    assert 4 <= rejections <= 18, rejections  # about 5 % of the rest
    assert failures + rejections + sum(isinstance(r, Succeeded) for r in results) == 200


@pytest.mark.parametrize(
    ("quantity", "reason"),
    [
        (0, "The quantity must be at least 1"),
        (-3, "The quantity must be at least 1"),
        (10_001, "The quantity cannot be more than 10,000"),
    ],
)
def test_quantities_outside_1_to_10000_are_always_rejected_with_a_reason(
    portal_app: Flask, quantity: int, reason: str
) -> None:
    provider = integrations(portal_app).providers.get("demo")
    result = provider.set_quantity(change("r-1", quantity))
    assert isinstance(result, BusinessRejection) and result.reason == reason
    for edge in (1, 10_000):
        assert isinstance(provider.set_quantity(change(f"edge-{edge}", edge)), Succeeded)


def test_reading_an_unknown_subscription_is_a_rejection(portal_app: Flask) -> None:
    result = integrations(portal_app).providers.get("demo").get_subscription("tenant-1", "nope")
    assert isinstance(result, BusinessRejection) and result.code == "demo.not_found"


def test_a_broken_store_is_a_technical_failure_not_an_exception(tmp_path: Path) -> None:
    provider = DemoProvider(sa.create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
    result = provider.set_quantity(change("r-1"))
    assert isinstance(result, TechnicalFailure) and result.retry_after is not None
    assert isinstance(provider.get_subscription("tenant-1", "sub-1"), TechnicalFailure)


@pytest.mark.parametrize(
    "bad", [{"FAILURE_RATE": "2"}, {"REJECTION_RATE": "-0.1"}, {"DELAY_SECONDS": "soon"}]
)
def test_a_bad_setting_stops_the_start_with_its_name(bad: dict[str, str]) -> None:
    config = app_config(
        "sqlite://",
        ["demo_provider"],
        PORTAL_PLUGIN_SETTINGS={"demo_provider": bad},
    )
    with pytest.raises(PluginError, match=f"PORTAL_DEMO_PROVIDER_{next(iter(bad))}"):
        create_app(config)


# -- own tables, own branch, public imports ----------------------------------------------------


def test_its_tables_are_its_own_and_match_its_migration(portal_app: Flask) -> None:
    names = set(DemoProviderBase.metadata.tables)
    assert names == {"demo_provider_subscription", "demo_provider_request"}
    assert not names & set(Base.metadata.tables)
    with get_database(portal_app).engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _parent: (
                    kind != "table" or str(name).startswith("demo_provider_")
                ),
            },
        )
        assert compare_metadata(context, DemoProviderBase.metadata) == []


def test_its_alembic_branch_depends_on_the_core() -> None:
    from alembic.script import ScriptDirectory

    from portal.cli import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://", [str(MIGRATIONS)]))
    labelled = [r for r in script.walk_revisions() if "demo_provider" in r.branch_labels]
    assert [r.revision for r in labelled] == ["demo_provider_0002", "demo_provider_0001"]
    assert labelled[0].down_revision == "demo_provider_0001"  # renewals (issue 14, point 4)
    base = labelled[-1]
    assert base.down_revision is None
    assert base.dependencies == "0001_foundation"


def test_it_imports_only_the_public_parts_of_the_portal() -> None:
    assert private_portal_imports(PLUGIN_PACKAGE) == []


# -- renewals (issue 14, point 4) -----------------------------------------------------------------


def test_it_renews_its_terms_with_the_scheduled_quantity_or_expires_them(
    portal_app: Flask,
) -> None:
    from datetime import UTC, date, datetime

    from portal.integrations.providers import AutoRenewSetting, NewSubscription, RenewalQuantity
    from portal.integrations.results import Succeeded

    now = [datetime(2026, 1, 15, 9, tzinfo=UTC)]
    provider = DemoProvider(
        get_database(portal_app).engine,
        DemoProviderSettings(delay_seconds=0, failure_rate=0, rejection_rate=0),
        clock=lambda: now[0],
    )
    bought = [
        provider.create_subscription(
            NewSubscription(f"buy-{n}", "tenant-r", "OFFER", 4, "P1M", "monthly")
        )
        for n in (1, 2)
    ]
    refs = [b.value.subscription_ref for b in bought if isinstance(b, Succeeded)]
    read = provider.get_subscription("tenant-r", refs[0])
    assert isinstance(read, Succeeded)
    assert (read.value.term_started_on, read.value.term_ends_on) == (
        date(2026, 1, 15),
        date(2026, 2, 14),
    )
    scheduled = provider.schedule_renewal_quantity(RenewalQuantity("r-1", "tenant-r", refs[0], 6))
    assert isinstance(scheduled, Succeeded) and scheduled.value.renewal_quantity == 6
    off = provider.set_auto_renew(AutoRenewSetting("r-2", "tenant-r", refs[1], False))
    assert isinstance(off, Succeeded) and off.value.auto_renew is False

    now[0] = datetime(2026, 2, 15, 9, tzinfo=UTC)  # the day after the term's last day
    renewed = provider.get_subscription("tenant-r", refs[0])
    assert isinstance(renewed, Succeeded)
    assert renewed.value.term_started_on == date(2026, 2, 15)
    assert renewed.value.term_ends_on == date(2026, 3, 14)
    assert (renewed.value.quantity, renewed.value.renewal_quantity) == (6, None)
    expired = provider.get_subscription("tenant-r", refs[1])
    assert isinstance(expired, Succeeded) and expired.value.status == "expired"
    assert expired.value.term_ends_on == date(2026, 2, 14)
