"""CSRF protection on every form post, except the signed machine-to-machine routes.

A view marked :func:`portal.web.access.machine_to_machine` (a gateway's webhook) is exempt: its
caller signs the request, and that signature is its authentication.
"""

from __future__ import annotations

from flask import Flask
from flask_wtf import CSRFProtect

csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    csrf.init_app(app)
