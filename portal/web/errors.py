"""Error pages: plain words, the partner's look when the partner is known, never a stack trace."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, render_template
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def _page(status: int, title: str, message: str, support_id: str | None = None) -> tuple[str, int]:
    return (
        render_template(
            "errors/error.html", status=status, title=title, message=message, support_id=support_id
        ),
        status,
    )


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> tuple[str, int]:
        return _page(
            400,
            _("This form has expired"),
            _("Go back, reload the page and try again. Nothing was changed."),
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[str, int] | HTTPException:
        status = error.code or 500
        messages = {
            403: (_("Not allowed"), _("Your role does not give you access to this page.")),
            404: (_("Page not found"), _("There is nothing here. Check the address.")),
            405: (_("Not allowed"), _("This action cannot be done that way.")),
            413: (_("Too large"), _("What you sent is too large.")),
            429: (
                _("Too many attempts"),
                _("For your security, wait a few minutes before you try again."),
            ),
        }
        if status not in messages:
            return error
        title, message = messages[status]
        return _page(status, title, message)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[str, int]:
        support_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error, support id %s", support_id)
        return _page(
            500,
            _("Something went wrong"),
            _("We have been told. If it keeps happening, quote this support id."),
            support_id,
        )
