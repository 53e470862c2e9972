"""Lifecycle, web and background-work slots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Blueprint, Flask

    from portal.integrations.ui import DashboardPanel, NavItem
    from portal.outbox.handlers import OutboxHandler, PeriodicJob


@hookspec
def portal_startup(app: Flask) -> None:
    """Called once when the app is built, after every plugin is registered.

    :param app: the Flask app being built; read settings with
        :func:`portal.plugins.plugin_settings`.
    :returns: nothing.
    Calling rule: every implementation is called.
    """


@hookspec
def portal_blueprints(app: Flask) -> Blueprint | list[Blueprint] | None:
    """Web pages of the plugin, mounted under ``/p/<plugin name>/``.

    :param app: the Flask app being built.
    :returns: a Blueprint, a list of them, or None. Every view must declare who may use it
        (``portal.web.access.public``, ``customer_required`` or ``staff_required``).
    Calling rule: all results are collected; each is mounted under its own plugin's prefix.
    """


@hookspec
def portal_nav_items() -> list[NavItem] | None:
    """Extra entries for the customer portal's main navigation.

    :returns: a list of :class:`portal.integrations.ui.NavItem`; an item is shown only to users
        whose role grants its permission.
    Calling rule: all results are collected, in registration order.
    """


@hookspec
def portal_dashboard_panels(customer_id: int) -> list[DashboardPanel] | None:
    """Panels added to a customer's dashboard.

    :param customer_id: the account whose dashboard is being drawn.
    :returns: a list of :class:`portal.integrations.ui.DashboardPanel` (a template and its
        context); None for no panel.
    Calling rule: all results are collected.
    """


@hookspec
def portal_template_context() -> dict[str, Any] | None:
    """Extra names for every template rendered by the portal.

    :returns: a dict merged into the template context; keys should carry the plugin's name.
    Calling rule: all results are collected and merged; a later plugin wins on a clash.
    """


@hookspec(firstresult=True)
def portal_resolve_partner_slug(host: str) -> str | None:
    """Which partner answers on a host name the ``partner_host`` table does not know.

    :param host: the request's host name, lower-case, without port.
    :returns: a partner slug, or None to let the next plugin (and finally the core's single
        partner or ``PORTAL_DEFAULT_PARTNER`` rule) decide.
    Calling rule: the first non-None result wins.
    """


@hookspec
def portal_outbox_handlers() -> dict[str, OutboxHandler] | None:
    """Kinds of background work the plugin performs, by outbox item kind.

    :returns: a dict from a kind (``"<plugin>.<verb>"``) to a handler called with the outbox
        item; see :mod:`portal.outbox.handlers` for the handler contract (idempotent, returns
        an outcome).
    Calling rule: all results are collected; a kind defined twice fails at start-up.
    """


@hookspec
def portal_beat_schedule() -> dict[str, dict[str, Any]] | None:
    """Periodic jobs, as Celery beat schedule entries.

    :returns: a dict from entry name to a Celery beat entry (``task``, ``schedule``, ``args``).
    Calling rule: all results are collected and merged; a name defined twice fails at start-up.
    """


@hookspec
def portal_periodic_tasks() -> dict[str, PeriodicJob] | None:
    """Periodic jobs of the plugin, by task name, for its ``portal_beat_schedule`` entries.

    A job is a plain function called with the Flask app, in its app context, by a Celery worker
    when its beat entry comes due: the plugin writes no Celery code. It runs at most as often
    as its entry says, and may run again after a crash, so it must be safe to repeat (enqueue
    outbox items for the real work, as the core's billing schedule does).

    :returns: a dict from a task name (``"<plugin>.<job>"``, the ``task`` of a beat entry) to
        the job.
    Calling rule: all results are collected and merged; a name defined twice fails at start-up.
    """


@hookspec
def portal_migration_locations() -> str | None:
    """Where the plugin's Alembic migrations (its own branch) live.

    :returns: the absolute path of a versions folder whose first revision has
        ``branch_labels = ("<plugin name>",)`` and ``depends_on`` the core revision it needs;
        None when the plugin has no tables. Tables are named ``<plugin name>_*``.
    Calling rule: all results are collected.
    """
