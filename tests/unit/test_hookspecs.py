"""Every hook specification is named, documented and listed in the plugin author guide.

The guide's hook reference (``docs/plugins.md``) is checked against the specs themselves, so it
cannot drift: a new or changed hook fails here until the guide says the same.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

import portal.hookspecs
from portal.core.config import ROOT
from portal.hookspecs import PROJECT
from portal.plugins import SPEC_MODULES

GUIDE = ROOT / "docs" / "plugins.md"
FIELD = re.compile(r"^(:param (?P<param>\w+):|:returns:|Calling rule:)")


@dataclass(frozen=True)
class Spec:
    module: str
    name: str
    function: Callable[..., Any]
    arguments: tuple[str, ...]
    summary: str
    params: dict[str, str]
    returns: str | None
    calling_rule: str | None


def normalised(text: str) -> str:
    return " ".join(text.split())


def as_markdown(text: str) -> str:
    """Docstring reST as the guide writes it: a role (:class:`x`) or a literal becomes `x`."""
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", text).replace("``", "`")


def parse(module: ModuleType, name: str, function: Callable[..., Any]) -> Spec:
    doc = inspect.cleandoc(function.__doc__ or "")
    lines = doc.splitlines()
    params: dict[str, str] = {}
    returns: str | None = None
    rule: str | None = None
    current: tuple[str, str] | None = None
    collected: dict[tuple[str, str], list[str]] = {}
    for line in lines[1:]:
        match = FIELD.match(line)
        if match:
            if match.group("param"):
                current = ("param", match.group("param"))
            elif line.startswith(":returns:"):
                current = ("returns", "")
            else:
                current = ("rule", "")
            collected[current] = [line[match.end() :].strip()]
        elif current is not None and line.startswith(" "):
            collected[current].append(line.strip())
        else:
            current = None
    for (kind, param), parts in collected.items():
        text = as_markdown(normalised(" ".join(parts)))
        if kind == "param":
            params[param] = text
        elif kind == "returns":
            returns = text
        else:
            rule = text
    return Spec(
        module=module.__name__,
        name=name,
        function=function,
        arguments=tuple(inspect.signature(function).parameters),
        summary=as_markdown(lines[0].strip()) if lines else "",
        params=params,
        returns=returns,
        calling_rule=rule,
    )


def hookspec_modules() -> list[ModuleType]:
    """Every module in ``portal/hookspecs/`` (not only the ones ``SPEC_MODULES`` names)."""
    return [
        importlib.import_module(f"portal.hookspecs.{info.name}")
        for info in pkgutil.iter_modules(portal.hookspecs.__path__)
    ]


def is_spec(value: object) -> bool:
    return callable(value) and hasattr(value, f"{PROJECT}_spec")


def all_specs() -> list[Spec]:
    return [
        parse(module, name, value)
        for module in hookspec_modules()
        for name, value in sorted(vars(module).items())
        if is_spec(value)
    ]


SPECS = all_specs()


def guide_sections() -> dict[str, str]:
    """The guide's hook reference: ``#### `portal_x(...)``` heading -> the text under it."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in GUIDE.read_text().splitlines():
        heading = re.match(r"^#### `(portal_\w+)\(", line)
        if heading:
            current = heading.group(1)
            sections[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_there_are_hookspecs_and_every_module_is_registered() -> None:
    assert len(SPECS) >= 10
    assert {m.__name__ for m in hookspec_modules()} == {m.__name__ for m in SPEC_MODULES}


def test_every_portal_function_in_a_hookspec_module_is_a_hookspec() -> None:
    for module in hookspec_modules():
        for name, value in vars(module).items():
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                assert is_spec(value), f"{module.__name__}.{name} is not marked @hookspec"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_hookspec_is_named_portal(spec: Spec) -> None:
    assert spec.name.startswith("portal_")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_hookspec_documents_its_arguments_return_and_calling_rule(spec: Spec) -> None:
    assert spec.summary, f"{spec.name} has no docstring"
    assert sorted(spec.params) == sorted(spec.arguments), (
        f"{spec.name}: document each argument with ':param <name>:' "
        f"(arguments {spec.arguments}, documented {tuple(spec.params)})"
    )
    assert all(spec.params.values()), f"{spec.name}: a ':param' line says nothing"
    assert spec.returns, f"{spec.name}: no ':returns:' line"
    assert spec.calling_rule, f"{spec.name}: no 'Calling rule:' line"


def test_the_guide_documents_every_hookspec_and_nothing_else() -> None:
    assert sorted(guide_sections()) == sorted(spec.name for spec in SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_guide_says_what_the_hookspec_says(spec: Spec) -> None:
    section = guide_sections().get(spec.name)
    assert section is not None, f"docs/plugins.md has no '#### `{spec.name}(…)`' section"
    text = normalised(section)
    assert spec.summary in text, f"{spec.name}: the guide lacks its first line {spec.summary!r}"
    for param, meaning in spec.params.items():
        assert f"`{param}`" in text and meaning in text, f"{spec.name}: argument {param}"
    assert spec.returns is not None and spec.returns in text, f"{spec.name}: its return"
    assert spec.calling_rule is not None and spec.calling_rule in text, f"{spec.name}: rule"
