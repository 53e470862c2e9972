"""Jinja filters for amounts and dates in the reader's language."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import Flask
from flask_babel import format_currency, format_date, format_datetime

from portal.domain.money import to_major
from portal.web.forms import role_label


def money(amount_minor: int | None, currency: str) -> str:
    if amount_minor is None:
        return "—"
    return str(format_currency(to_major(amount_minor, currency), currency))


def when(value: datetime | None, style: str = "medium") -> str:
    """A moment in the reader's language and the partner's time zone, with the zone named."""
    if value is None:
        return "—"
    return f"{format_datetime(value, style)} {format_datetime(value, 'zzz')}"


def day(value: date | None, style: str = "medium") -> str:
    """A calendar day in the reader's language (no time zone: a day is the partner's day)."""
    return "—" if value is None else str(format_date(value, style))


def init_app(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(when, "when")
    app.add_template_filter(day, "format_date")
    app.jinja_env.globals["timedelta"] = timedelta
    app.jinja_env.globals["role_label"] = role_label
