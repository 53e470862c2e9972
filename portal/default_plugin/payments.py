"""The payments capability's answer to gateway plugins: the function that records webhook
deliveries once, named to :func:`portal.integrations.payments.receive_webhook` when the app is
built, so a gateway plugin records payments without importing the portal's services."""

from __future__ import annotations

from flask import Flask

from portal.features.payments.services.events import receive_webhook
from portal.hookspecs import hookimpl
from portal.integrations.payments import set_webhook_receiver


@hookimpl
def portal_startup(app: Flask) -> None:
    set_webhook_receiver(app, receive_webhook)
