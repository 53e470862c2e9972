"""A third-party plugin as its authors ship it: built into a wheel, installed with pip, found
through its ``portal.plugins`` entry point, and imported only when ``PORTAL_PLUGINS`` names it.

Each check runs in a fresh interpreter so that import state is clean.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "package"
SCRIPT = HERE / "in_fresh_interpreter.py"
DISTRIBUTION = "portal-example-plugin"


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def can_build_without_the_network() -> bool:
    """setuptools builds wheels by itself from 70.1; before that it needs ``wheel``."""
    version = tuple(int(p) for p in importlib.metadata.version("setuptools").split(".")[:2])
    return version >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plugin, built from a copy of its source and installed into this venv."""
    source = tmp_path_factory.mktemp("example-plugin") / "package"
    shutil.copytree(PACKAGE, source)  # building writes into the tree: keep the repository clean
    pip("uninstall", "-y", DISTRIBUTION)  # what an interrupted run may have left
    if can_build_without_the_network():
        result = pip("install", "--no-deps", "--no-build-isolation", str(source))
    else:
        # this venv's setuptools needs the `wheel` package to build: let pip fetch the build
        # requirements from the configured index into an isolated build environment
        result = pip("install", "--no-deps", str(source))
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield source
    finally:
        removed = pip("uninstall", "-y", DISTRIBUTION)
        assert removed.returncode == 0, removed.stdout + removed.stderr


def fresh_portal(tmp_path: Path, plugins: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "portal.sqlite3"), plugins],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_the_entry_point_is_installed(installed: Path) -> None:
    (entry,) = [
        e for e in importlib.metadata.entry_points(group="portal.plugins") if e.name == "example"
    ]
    assert entry.value == "portal_example_plugin"
    assert entry.dist is not None and entry.dist.name == DISTRIBUTION


def test_named_in_portal_plugins_its_hooks_take_effect(installed: Path, tmp_path: Path) -> None:
    report = fresh_portal(tmp_path, "example")
    assert report["imported"] == ["portal_example_plugin"]
    assert report["plugins"] == {
        "example": {
            "version": "0.1.0",
            "source": f"entry point ({DISTRIBUTION})",
            "hooks": ["portal_blueprints", "portal_nav_items", "portal_template_context"],
        }
    }
    assert report["dashboard_status"] == 200
    assert report["dashboard_links_hello"] is True
    assert (report["hello_status"], report["hello_greets"]) == (200, True)
    assert report["anonymous_hello"] == 302  # customer_required: to the sign-in page


def test_not_named_it_is_never_imported(installed: Path, tmp_path: Path) -> None:
    report = fresh_portal(tmp_path, "")
    assert report["imported"] == []
    assert report["plugins"] == {}
    assert report["dashboard_links_hello"] is False
    assert report["hello_status"] == 404
