"""ServiceError (a refusal shown to the user) and the typed gettext ``_`` services use."""

from typing import Any

from flask_babel import gettext


class ServiceError(Exception):
    """A request the rules refuse; ``message`` is shown to the user as it is (translated)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _(message: str, **variables: Any) -> str:
    """``gettext``, typed: ``message`` in the current request's (or mail's) language."""
    return str(gettext(message, **variables))
