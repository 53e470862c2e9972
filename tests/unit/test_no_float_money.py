"""C4: no floats in the money code (reliability-security.md block C).

The money modules are parsed, not imported or grepped: a ``float(`` call, a float literal
(``0.2``, ``1e3``), a ``float`` annotation, ``math`` (float arithmetic) or a change to the
global Decimal context is a finding. Decimal contexts are explicit
(``localcontext(MONEY_CONTEXT)``), never set globally.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MONEY_MODULES = [
    ROOT / "portal" / "core" / "money.py",
    ROOT / "portal" / "core" / "proration.py",
    ROOT / "portal" / "features" / "billing" / "rules" / "invoicing.py",
    ROOT / "portal" / "features" / "billing" / "rules" / "revenue.py",
]


def float_findings(source: str, filename: str = "<money>") -> list[str]:
    """Where ``source`` uses floats or the global Decimal context, as ``line: what``."""
    findings: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, float | complex):
            findings.append(f"{line}: float literal {node.value!r}")
        elif isinstance(node, ast.Name) and node.id == "float":
            findings.append(f"{line}: float")
        elif isinstance(node, ast.Constant) and node.value == "float":
            findings.append(f"{line}: float in a string annotation")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module == "math" or "math" in names:
                findings.append(f"{line}: math (float arithmetic)")
            if module == "decimal" and {"getcontext", "setcontext", "DefaultContext"} & set(names):
                findings.append(f"{line}: the global Decimal context")
        elif isinstance(node, ast.Attribute) and node.attr in {"getcontext", "setcontext"}:
            findings.append(f"{line}: the global Decimal context")
        elif _true_division_by(node) is not None and not _is_decimal(_true_division_by(node)):
            # int / int is a float: a divisor must be visibly a Decimal
            findings.append(f"{line}: division by something not wrapped in Decimal(...)")
    return findings


def _true_division_by(node: ast.AST) -> ast.expr | None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return node.right
    if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Div):
        return node.value
    return None


def _is_decimal(node: ast.expr | None) -> bool:
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Decimal"
    )


@pytest.mark.parametrize("module", MONEY_MODULES, ids=lambda path: path.name)
def test_money_modules_use_no_floats(module: Path) -> None:
    assert module.exists(), f"{module} is a money module: keep this list up to date"
    assert float_findings(module.read_text(encoding="utf-8"), str(module)) == []


@pytest.mark.parametrize(
    "source",
    [
        "amount = float(total)",
        "rate = 0.2",
        "big = 1e3",
        "def share(amount: float) -> int: ...",
        "def share(amount: 'float') -> int: ...",
        "import math",
        "from math import floor",
        "from decimal import getcontext",
        "import decimal\ndecimal.getcontext().prec = 10",
        "half = 1 / 2",
        "share = amount * days / period.days",
        "share /= 3",
    ],
)
def test_the_check_finds_floats(source: str) -> None:
    assert float_findings(source) != []


def test_the_check_passes_decimal_code() -> None:
    source = (
        "from decimal import Decimal, localcontext\n"
        "with localcontext(MONEY_CONTEXT):\n"
        "    share = Decimal(amount) * seats / Decimal(days)\n"
        "    share /= Decimal(3)\n"
        "parts = [total * weight // weight_sum for weight in weights]\n"
    )
    assert float_findings(source) == []
