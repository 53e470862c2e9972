"""The plugins' public surface: every first-party plugin imports only what
``portal.plugins.PUBLIC_SURFACE`` names (ARCHITECTURE.md), so a third-party plugin written like
them never breaks on a move inside the portal."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal.plugins import FIRST_PARTY_DIR, PUBLIC_SURFACE, is_public
from portal.testing.support import private_portal_imports

PLUGINS = sorted(p for p in FIRST_PARTY_DIR.iterdir() if (p / "pyproject.toml").is_file())


def test_every_first_party_plugin_is_checked() -> None:
    names = {p.name for p in PLUGINS}
    assert {"demo_payments", "demo_provider", "partner_center_provider", "stripe_payments"} <= names


@pytest.mark.parametrize("project", PLUGINS, ids=lambda p: p.name)
def test_a_first_party_plugin_imports_only_the_public_surface(project: Path) -> None:
    assert private_portal_imports(project / project.name) == []


def test_the_checker_finds_a_private_import(tmp_path: Path) -> None:
    package = tmp_path / "acme"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from portal.hookspecs import hookimpl\n"
        "from portal.features.payments.services.events import receive_webhook\n"
        "import portal.features.billing.models\n"
    )
    assert private_portal_imports(package) == [
        "__init__.py: portal.features.payments.services.events",
        "__init__.py: portal.features.billing.models",
    ]


@pytest.mark.parametrize(
    ("module", "public"),
    [
        ("portal", True),
        ("portal.integrations", True),
        ("portal.integrations.payments", True),
        ("portal.outbox.items", True),
        ("portal.testing.contracts", True),
        ("portal.web.access", True),
        ("portal.web.rate_limits", False),
        ("portal.core.scoping", False),
        ("portal.features.payments.services.events", False),
        ("portal.integrationsx", False),
    ],
)
def test_the_surface_names_packages_and_modules(module: str, public: bool) -> None:
    assert is_public(module) is public


def test_the_plugin_guide_lists_the_same_surface() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    section = guide.split("## The public surface", 1)[1].split("\n## ", 1)[0]
    listed = {line.split("`")[1] for line in section.splitlines() if line.startswith("- `")}
    assert listed == set(PUBLIC_SURFACE)
