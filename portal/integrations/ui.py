"""What plugins add to the customer portal's pages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from portal.core.roles import Permission


@dataclass(frozen=True)
class NavItem:
    """A main-navigation entry, shown to users whose role grants ``permission``."""

    label: str
    endpoint: str
    permission: Permission


@dataclass(frozen=True)
class DashboardPanel:
    """A dashboard card: ``template`` (under the plugin's ``templates/<name>/``) and its context."""

    title: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)
