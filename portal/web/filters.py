"""Jinja filters for amounts and dates in the reader's language."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from portal.core.formatting import day, money, when
from portal.web.forms import role_label


def init_app(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(when, "when")
    app.add_template_filter(day, "format_date")
    app.jinja_env.globals["timedelta"] = timedelta
    app.jinja_env.globals["role_label"] = role_label
