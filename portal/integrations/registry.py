"""Registries of adapters, collected from the plugins' registration hooks, the UI slots, and
the calls that deliver an event to one plugin (:mod:`portal.integrations.delivery`). The only
place that calls ``pm.hook``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import pluggy
from flask import Flask, current_app

from portal.integrations.accounting import AccountingSystem
from portal.integrations.notifications import Notifier
from portal.integrations.payments import PaymentGateway
from portal.integrations.providers import ProviderAdapter
from portal.integrations.ui import DashboardPanel, NavItem

if TYPE_CHECKING:
    from portal.outbox.handlers import OutboxHandler, PeriodicJob

log = logging.getLogger(__name__)
A = TypeVar("A")


class PluginError(RuntimeError):
    """A plugin set-up the portal refuses to start with; the message says how to fix it."""


class PluginNotLoaded(RuntimeError):
    """Work for a plugin that this process has not loaded (taken out, or not yet deployed)."""


def _results(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Call each implementation of ``hook`` in turn, yielding ``(plugin name, result)``."""
    caller = getattr(pm.hook, hook)
    for impl in caller.get_hookimpls():  # pluggy lists them in registration order
        result = impl.function(**{name: kwargs[name] for name in impl.argnames})
        if result is not None:
            yield pm.get_name(impl.plugin) or "?", result


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


class Registry(Generic[A]):
    """Adapters of one kind by their unique ``key``."""

    def __init__(self, kind: str, protocol: type, entries: list[tuple[str, A]]) -> None:
        self.kind = kind
        self._adapters: dict[str, A] = {}
        self.owners: dict[str, str] = {}
        for plugin, adapter in entries:
            if not isinstance(adapter, protocol):
                raise PluginError(
                    f"plugin {plugin!r} registered {adapter!r} as a {kind}, but it does not "
                    f"implement {protocol.__name__}"
                )
            key = str(getattr(adapter, "key", ""))
            if key in self._adapters:
                raise PluginError(
                    f"two {kind} adapters share the key {key!r} (plugins "
                    f"{self.owners[key]!r} and {plugin!r}); keys must be unique"
                )
            self._adapters[key] = adapter
            self.owners[key] = plugin

    def get(self, key: str) -> A:
        try:
            return self._adapters[key]
        except KeyError:
            known = ", ".join(sorted(self._adapters)) or "none"
            raise PluginError(
                f"no {self.kind} adapter with key {key!r} is loaded (loaded: {known}); "
                "enable its plugin in PORTAL_PLUGINS"
            ) from None

    def keys(self) -> list[str]:
        return sorted(self._adapters)

    def __contains__(self, key: object) -> bool:
        return key in self._adapters

    def __len__(self) -> int:
        return len(self._adapters)


@dataclass
class Integrations:
    """Everything the plugins contributed to one app."""

    pm: pluggy.PluginManager
    providers: Registry[ProviderAdapter]
    payment_gateways: Registry[PaymentGateway]
    accounting_systems: Registry[AccountingSystem]
    notifiers: Registry[Notifier]
    outbox_handlers: dict[str, OutboxHandler] = field(default_factory=dict)
    beat_schedule: dict[str, dict[str, Any]] = field(default_factory=dict)
    periodic_jobs: dict[str, PeriodicJob] = field(default_factory=dict)
    migration_locations: list[str] = field(default_factory=list)

    @classmethod
    def collect(cls, pm: pluggy.PluginManager, app: Flask) -> Integrations:
        def adapters(hook: str) -> list[tuple[str, Any]]:
            return [(p, a) for p, result in _results(pm, hook, app=app) for a in _as_list(result)]

        return cls(
            pm=pm,
            providers=Registry("provider", ProviderAdapter, adapters("portal_register_providers")),
            payment_gateways=Registry(
                "payment gateway", PaymentGateway, adapters("portal_register_payment_gateways")
            ),
            accounting_systems=Registry(
                "accounting system",
                AccountingSystem,
                adapters("portal_register_accounting_systems"),
            ),
            notifiers=Registry("notifier", Notifier, adapters("portal_register_notifiers")),
            outbox_handlers=_merge_unique(pm, "portal_outbox_handlers", "outbox kind"),
            beat_schedule=_merge_unique(pm, "portal_beat_schedule", "beat schedule entry"),
            periodic_jobs=_merge_unique(pm, "portal_periodic_tasks", "periodic task"),
            migration_locations=[str(r) for _, r in _results(pm, "portal_migration_locations")],
        )

    # -- selection by configuration ------------------------------------------------------

    def provider(self, *keys: str | None) -> ProviderAdapter:
        """The provider named by the first set key (customer, partner), else the default."""
        return self.providers.get(_first_key(keys, "PORTAL_PROVIDER"))

    def payment_gateway(self, *keys: str | None) -> PaymentGateway:
        return self.payment_gateways.get(_first_key(keys, "PORTAL_PAYMENT_GATEWAY"))

    def accounting_system(self, *keys: str | None) -> AccountingSystem:
        return self.accounting_systems.get(_first_key(keys, "PORTAL_ACCOUNTING_SYSTEM"))

    def notifier(self, *keys: str | None) -> Notifier:
        return self.notifiers.get(_first_key(keys, "PORTAL_NOTIFIER"))

    # -- events and UI slots ---------------------------------------------------------------

    def subscribers(self, hook: str) -> list[str]:
        """The names of the plugins that implement the event hook ``hook``, in registration
        order."""
        caller = getattr(self.pm.hook, hook)
        return [self.pm.get_name(impl.plugin) or "?" for impl in caller.get_hookimpls()]

    def call_one(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """Call the implementation of ``hook`` of one plugin, with the arguments it declares;
        raises :class:`PluginNotLoaded` when that plugin (no longer) implements it."""
        caller = getattr(self.pm.hook, hook)
        found = [i for i in caller.get_hookimpls() if self.pm.get_name(i.plugin) == plugin]
        if not found:
            raise PluginNotLoaded(f"plugin {plugin!r} does not implement {hook} (is it loaded?)")
        impl = found[0]
        return impl.function(**{arg: kwargs[arg] for arg in impl.argnames})

    def nav_items(self) -> list[NavItem]:
        return [item for _, items in _results(self.pm, "portal_nav_items") for item in items]

    def dashboard_panels(self, customer_id: int) -> list[DashboardPanel]:
        return [
            panel
            for _, panels in _results(self.pm, "portal_dashboard_panels", customer_id=customer_id)
            for panel in panels
        ]

    def template_context(self) -> dict[str, Any]:
        context: dict[str, Any] = {}
        for _, extra in _results(self.pm, "portal_template_context"):
            context.update(extra)
        return context

    def resolve_partner_slug(self, host: str) -> str | None:
        return cast(str | None, self.pm.hook.portal_resolve_partner_slug(host=host))


def _first_key(keys: tuple[str | None, ...], setting: str) -> str:
    for key in keys:
        if key:
            return key
    default = current_app.config.get(setting)
    if not default:
        raise PluginError(f"no adapter chosen: set {setting} or choose one for the partner")
    return str(default)


def _merge_unique(pm: pluggy.PluginManager, hook: str, what: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for plugin, entries in _results(pm, hook):
        for key, value in entries.items():
            if key in merged:
                raise PluginError(
                    f"{what} {key!r} is defined by both {owners[key]!r} and {plugin!r}"
                )
            merged[key] = value
            owners[key] = plugin
    return merged


def integrations(app: Flask | None = None) -> Integrations:
    return cast(Integrations, (app or current_app).extensions["portal_integrations"])
