"""A web worker connects to the database and the broker before it takes requests."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

from flask import Flask

from portal.db import get_database
from portal.warmup import warm_up

ROOT = Path(__file__).resolve().parents[2]


def test_warm_up_leaves_open_connections_in_the_pool(app: Flask) -> None:
    engine = get_database(app).engine
    engine.dispose()
    opened = warm_up(app, connections=4)
    assert opened >= 1
    assert engine.pool.checkedin() == opened  # type: ignore[attr-defined]
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_gunicorn_config_warms_the_portal_and_leaves_other_apps_alone(app: Flask) -> None:
    hooks = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    engine = get_database(app).engine
    engine.dispose()
    hooks["post_worker_init"](SimpleNamespace(wsgi=app, cfg=SimpleNamespace(threads=2)))
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]

    other = Flask("baseline")
    hooks["post_worker_init"](SimpleNamespace(wsgi=other, cfg=SimpleNamespace(threads=2)))
    assert "portal_db" not in other.extensions
