"""Fixtures shared by the integration tests of one area."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import BACKENDS, Mailbox
from tests.integration.payments_support import payments_apps


@pytest.fixture(params=BACKENDS)
def payment_apps(
    request: pytest.FixtureRequest,
    smtp_server: tuple[int, Mailbox],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Flask]]:
    """Makes apps on the payment tests' own database, on each backend (see
    :func:`tests.integration.payments_support.payments_apps`)."""
    yield from payments_apps(request.param, smtp_server, tmp_path_factory)


MakePlugin = Callable[..., Path]


@pytest.fixture
def make_plugin(tmp_path: Path) -> Iterator[MakePlugin]:
    """Write a plugin project ``<folder>/<name>/<name>/__init__.py``; returns the folder.

    At teardown the plugins' modules and paths are forgotten, so a later test may reuse a name.
    """
    folder = tmp_path / "plugins"
    folder.mkdir()
    made: list[tuple[str, Path]] = []

    def make(
        name: str, source: str, templates: dict[str, str] | None = None, version: str = "1.2.3"
    ) -> Path:
        project = folder / name
        (project / name).mkdir(parents=True)
        (project / "pyproject.toml").write_text(
            f'[project]\nname = "{name.replace("_", "-")}"\nversion = "{version}"\n'
        )
        (project / name / "__init__.py").write_text(textwrap.dedent(source))
        for relative, text in (templates or {}).items():
            path = project / name / "templates" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        made.append((name, project))
        return folder

    yield make
    for name, project in made:
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]
        while str(project) in sys.path:
            sys.path.remove(str(project))
