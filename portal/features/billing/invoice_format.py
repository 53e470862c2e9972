"""What the invoice pages, the PDF and the CSV exports share: status names, filters that print
periods, unit prices and quantities in the reader's language, and the list filter form."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from babel.dates import format_interval
from babel.numbers import format_currency, format_decimal
from flask import Blueprint, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional

from portal.core.extensions import _request_translations
from portal.features.billing.models import InvoiceStatus
from portal.web.forms import N_

# the statuses a customer can filter on (drafts are never theirs)
CUSTOMER_STATUSES = (
    InvoiceStatus.OPEN,
    InvoiceStatus.PARTIALLY_PAID,
    InvoiceStatus.OVERDUE,
    InvoiceStatus.PAID,
    InvoiceStatus.VOID,
)
STATUS_LABELS: dict[InvoiceStatus, str] = {
    InvoiceStatus.DRAFT: N_("Draft"),
    InvoiceStatus.OPEN: N_("Open"),
    InvoiceStatus.PARTIALLY_PAID: N_("Partially paid"),
    InvoiceStatus.PAID: N_("Paid"),
    InvoiceStatus.OVERDUE: N_("Overdue"),
    InvoiceStatus.VOID: N_("Void"),
}
STATUS_BADGES: dict[InvoiceStatus, str] = {
    InvoiceStatus.DRAFT: "text-bg-secondary",
    InvoiceStatus.OPEN: "text-bg-primary",
    InvoiceStatus.PARTIALLY_PAID: "text-bg-warning",
    InvoiceStatus.PAID: "text-bg-success",
    InvoiceStatus.OVERDUE: "text-bg-danger",
    InvoiceStatus.VOID: "text-bg-light border",
}
# a spreadsheet would run these as a formula (CSV injection); such text cells get a quote
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def status_label(status: InvoiceStatus | str) -> str:
    return str(_request_translations().ugettext(STATUS_LABELS[InvoiceStatus(status)]))


def status_badge(status: InvoiceStatus | str) -> str:
    return STATUS_BADGES[InvoiceStatus(status)]


def period(start: date, end_exclusive: date) -> str:
    """A period as people write it (1 to 31 May 2026): stored periods end on the next day."""
    last = end_exclusive - timedelta(days=1)
    if last <= start:
        return str(format_interval(start, start, "yMMMd", locale=get_locale()))
    return str(format_interval(start, last, "yMMMd", locale=get_locale()))


def unit_price(amount: Decimal, currency: str) -> str:
    """A unit price with every decimal it has (usage prices keep more than the currency)."""
    return str(format_currency(amount, currency, locale=get_locale(), decimal_quantization=False))


def quantity(amount: Decimal) -> str:
    return str(format_decimal(amount, locale=get_locale(), decimal_quantization=False))


def percent(rate: Decimal) -> str:
    """A rate (0.2) as "20 %" in the reader's language, with the decimals it has."""
    return (
        str(format_decimal(rate * 100, locale=get_locale(), decimal_quantization=False)) + "\u00a0%"
    )


def register_template_helpers(bp: Blueprint) -> None:
    """Filters and globals for every template (staff pages print invoices too)."""
    bp.add_app_template_filter(period, "period")
    bp.add_app_template_filter(unit_price, "unit_price")
    bp.add_app_template_filter(quantity, "quantity")
    bp.add_app_template_filter(percent, "percent")
    bp.add_app_template_global(status_label, "invoice_status_label")
    bp.add_app_template_global(status_badge, "invoice_status_badge")


# -- the list's filters -----------------------------------------------------------------------


class InvoiceFilterForm(FlaskForm):  # type: ignore[misc]
    """The list's filters, read from the query string (a GET form: no CSRF token)."""

    class Meta:
        csrf = False

    status = SelectField(_l("Status"), validators=[Optional()])
    issued_from = DateField(_l("Issued from"), validators=[Optional()], format="%Y-%m-%d")
    issued_to = DateField(_l("Issued to"), validators=[Optional()], format="%Y-%m-%d")

    def __init__(self, statuses: Sequence[InvoiceStatus], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.status.choices = [
            SelectChoice("", str(_l("All statuses"))),
            *(SelectChoice(s.value, status_label(s)) for s in statuses),
        ]

    def check(self) -> bool:
        """Validate, with messages that say what to type; a bad filter is then left out."""
        valid = bool(self.validate())
        for date_field in (self.issued_from, self.issued_to):
            if date_field.errors:
                date_field.errors = [str(_l("Enter a date like 2026-05-31."))]
                date_field.data = None
        if self.status.errors:
            self.status.errors = [str(_l("Choose one of the statuses in the list."))]
            self.status.data = ""
        if (
            self.issued_from.data
            and self.issued_to.data
            and self.issued_from.data > self.issued_to.data
        ):
            self.issued_to.errors = [str(_l("The end date is before the start date."))]
            self.issued_to.data = None
            valid = False
        return valid

    def statuses(self) -> list[InvoiceStatus]:
        return [InvoiceStatus(self.status.data)] if self.status.data else []

    def query_args(self) -> dict[str, str]:
        """The valid filters, for links (pagination, CSV) that keep them."""
        values = {
            "status": self.status.data or "",
            "issued_from": self.issued_from.data.isoformat() if self.issued_from.data else "",
            "issued_to": self.issued_to.data.isoformat() if self.issued_to.data else "",
        }
        return {key: value for key, value in values.items() if value}


# -- CSV ----------------------------------------------------------------------------------------


def csv_text(value: str) -> str:
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def csv_rows(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Iterator[str]:
    """The CSV text (the csv module's excel dialect), one row at a time, header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 16_384:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate(0)
    yield buffer.getvalue()


def same_query(path: str) -> str:
    """``path`` with this request's query string: an export with bad filters goes back to the
    page, which says what is wrong with them."""
    query = request.query_string.decode("latin-1")
    return f"{path}?{query}" if query else path
