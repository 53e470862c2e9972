"""Licence providers: Microsoft Partner Center, distributors, the demo provider."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portal.hookspecs import hookspec

if TYPE_CHECKING:
    from flask import Flask

    from portal.integrations.events import LicenceChangeFinished
    from portal.integrations.providers import ProviderAdapter


@hookspec
def portal_register_providers(app: Flask) -> list[ProviderAdapter] | None:
    """Provider adapters this plugin offers.

    :param app: the Flask app being built (for the plugin's settings).
    :returns: objects implementing :class:`portal.integrations.providers.ProviderAdapter`, each
        with a unique ``key``; configuration picks which one serves a partner or customer.
    Calling rule: all results are collected; a duplicate key fails at start-up.
    """


@hookspec
def portal_on_licence_change_finished(event: LicenceChangeFinished) -> None:
    """A licence change reached a final state (provisioned, rejected or failed).

    :param event: what changed, for whom, and how it ended.
    :returns: nothing.
    Calling rule: every implementation is called; one that raises is logged and skipped, and
        never stops the others.
    """
