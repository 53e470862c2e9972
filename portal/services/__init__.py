"""Use cases. Views call these; these own transactions, audit and mail."""


class ServiceError(Exception):
    """A request the rules refuse; ``message`` is shown to the user as it is (translated)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
