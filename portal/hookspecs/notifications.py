"""Notifiers: email and whatever else tells people what happened."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Flask

    from portal.integrations.notifications import Notifier


@hookspec
def portal_register_notifiers(app: Flask) -> list[Notifier] | None:
    """Notifiers this plugin offers (email, chat, SMS …).

    :param app: the Flask app being built (for the plugin's settings).
    :returns: objects implementing :class:`portal.integrations.notifications.Notifier`, each
        with a unique ``key``.
    Calling rule: all results are collected; a duplicate key fails at start-up.
    """
