"""Periodic jobs reach the worker through plugins (``portal_periodic_tasks``), the core's own
included: the outbox knows task names and schedules, never the capabilities behind them."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal import create_app
from portal.default_plugin.schedule import (
    BILLING_SCHEDULE_TASK,
    CREDIT_HOLDS_TASK,
    LICENCES_SWEEP_TASK,
    PAYMENTS_RECONCILE_TASK,
    PURGE_SESSIONS_TASK,
    RENEWALS_TASK,
)
from portal.integrations.registry import PluginError
from portal.outbox.broker import RUN_TASK, SWEEP_TASK, celery_for
from portal.outbox.celery_app import make_celery
from portal.outbox.handlers import wiring
from portal.testing.support import app_config

JOB_PLUGIN = """
    from datetime import timedelta

    from flask import current_app

    from portal import hookimpl

    CALLS = []


    def tally(app):
        CALLS.append((app.name, current_app.name))  # called with the app, in its context
        return len(CALLS)


    @hookimpl
    def portal_periodic_tasks():
        return {"{name}.tally": tally}


    @hookimpl
    def portal_beat_schedule():
        return {"{name}.tally": {"task": "{name}.tally", "schedule": timedelta(minutes=5)}}
"""


@pytest.fixture
def plugin_folder(tmp_path: Path) -> Iterator[Any]:
    made: list[str] = []

    def make(name: str, source: str) -> Path:
        project = tmp_path / "plugins" / name
        (project / name).mkdir(parents=True)
        (project / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1"\n')
        (project / name / "__init__.py").write_text(textwrap.dedent(source).replace("{name}", name))
        made.append(name)
        return tmp_path / "plugins"

    yield make
    for name in made:
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]
        sys.path[:] = [p for p in sys.path if not p.endswith(f"/plugins/{name}")]


def start(plugins: list[str], folder: Path | None = None) -> Flask:
    config: dict[str, Any] = {"PORTAL_PLUGINS": plugins}
    if folder is not None:
        config["PORTAL_PLUGIN_PATHS"] = str(folder)
    return create_app(app_config("sqlite://", [], **config))


def test_the_core_periodic_jobs_are_the_worker_tasks_their_beat_entries_name() -> None:
    app = start([])
    celery = make_celery(app)
    for task in (SWEEP_TASK, PURGE_SESSIONS_TASK, BILLING_SCHEDULE_TASK, PAYMENTS_RECONCILE_TASK):
        assert task in celery.tasks
    beat_tasks = {entry["task"] for entry in celery.conf.beat_schedule.values()}
    jobs = {
        PURGE_SESSIONS_TASK,
        BILLING_SCHEDULE_TASK,
        PAYMENTS_RECONCILE_TASK,
        LICENCES_SWEEP_TASK,
        CREDIT_HOLDS_TASK,
        RENEWALS_TASK,
    }
    assert beat_tasks == {SWEEP_TASK, *jobs}
    assert set(wiring(app).periodic_jobs) == jobs


def test_a_plugin_schedules_a_job_without_celery_code(plugin_folder: Any) -> None:
    folder = plugin_folder("plugintest_jobs", JOB_PLUGIN)
    app = start(["plugintest_jobs"], folder)
    celery = make_celery(app)
    assert celery.conf.beat_schedule["plugintest_jobs.tally"]["task"] == "plugintest_jobs.tally"
    task = celery.tasks["plugintest_jobs.tally"]
    assert task() == 1  # as the worker runs it when beat sends the entry
    assert task() == 2
    calls = sys.modules["plugintest_jobs"].CALLS
    assert calls == [(app.name, app.name)] * 2


def test_the_web_side_celery_only_sends() -> None:
    app = start([])
    sending = celery_for(app)
    assert RUN_TASK not in sending.tasks and PURGE_SESSIONS_TASK not in sending.tasks
    worker = make_celery(app)
    assert celery_for(app) is worker  # a worker process sends through its own app
    assert RUN_TASK in worker.tasks


def test_two_plugins_naming_the_same_job_stop_the_start(plugin_folder: Any) -> None:
    clash = JOB_PLUGIN.replace('"{name}.tally": tally', '"shared.tally": tally')
    plugin_folder("plugintest_job_a", clash)
    folder = plugin_folder("plugintest_job_b", clash)
    with pytest.raises(PluginError, match=r"periodic task 'shared\.tally' is defined by both"):
        start(["plugintest_job_a", "plugintest_job_b"], folder)


def test_an_unwired_app_says_so() -> None:
    with pytest.raises(RuntimeError, match="never wired"):
        wiring(Flask("bare"))
