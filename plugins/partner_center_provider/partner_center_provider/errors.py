"""How Partner Center's answers and transport failures become the portal's results.

==================================================  ===========================================
answer                                              result
==================================================  ===========================================
408, 429, 5xx, timeout, dropped connection          ``TechnicalFailure`` (``Retry-After`` kept)
401 (after one token refresh)                       ``TechnicalFailure`` (900421: MFA missing)
400/403/404/409 with a business code                ``BusinessRejection(description, code)``
  … except codes that only mean "not now"           ``TechnicalFailure``
  (``TRANSIENT_CODES``) or ``isRetryable: true``
any other 4xx, or one without an error code         ``TechnicalFailure`` (our set-up, not a no)
==================================================  ===========================================

A timeout or a dropped connection after a write was sent says the outcome is unknown: the
portal reads the subscription back before it sends the same request (same ``MS-RequestId``)
again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from partner_center_provider.auth import TokenError
from portal.integrations.results import BusinessRejection, TechnicalFailure

TECHNICAL_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BUSINESS_STATUSES = frozenset({400, 403, 404, 409})
# business-looking codes that only mean "not now": retrying later (after a fresh read) works
TRANSIENT_CODES = frozenset(
    {
        "2055",  # Etag is no longer valid (the subscription changed between our read and write)
        "800014",  # a pending adjustment on the subscription
        "800060",  # "Your order is in progress": an earlier change is still being applied
    }
)
ETAG_STALE = "2055"
MFA_REQUIRED = "900421"
MAX_REASON = 1024


@dataclass(frozen=True)
class ApiError:
    """Partner Center's error body: ``{code, description, data, source}`` and, in newer
    answers, ``message``, ``errorName`` and ``isRetryable``. ``code`` is kept as a string
    (it arrives as a number or a string)."""

    status: int
    code: str | None
    description: str
    error_name: str | None = None
    is_retryable: bool | None = None


def parse_error(response: httpx.Response) -> ApiError:
    """The error in ``response`` (an empty description when the body says nothing)."""
    body: Any
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict):
        return ApiError(response.status_code, None, "")
    raw_code = body.get("code", body.get("errorCode"))
    code = None
    if isinstance(raw_code, bool):  # not an error code, whatever it is
        code = None
    elif isinstance(raw_code, int | float):
        code = str(int(raw_code))
    elif isinstance(raw_code, str) and raw_code.strip():
        code = raw_code.strip()
    text = body.get("description") or body.get("message") or ""
    retryable = body.get("isRetryable")
    name = body.get("errorName")
    return ApiError(
        status=response.status_code,
        code=code,
        description=" ".join(str(text).split())[:MAX_REASON],
        error_name=str(name) if name else None,
        is_retryable=retryable if isinstance(retryable, bool) else None,
    )


def retry_after(response: httpx.Response) -> timedelta | None:
    """``Retry-After`` as a duration (seconds or an HTTP date), None when absent or odd."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return timedelta(seconds=max(0.0, seconds))


def classify_response(response: httpx.Response, what: str) -> TechnicalFailure | BusinessRejection:
    """The result for an answer that is not a success. ``what`` names the call for people."""
    status = response.status_code
    error = parse_error(response)
    said = f"{error.description} " if error.description else ""
    coded = f", code {error.code}" if error.code else ""
    if status == 401:
        if error.code == MFA_REQUIRED:
            return TechnicalFailure(
                f"Partner Center refused the token for {what} (401, code {MFA_REQUIRED}: "
                "multi-factor authentication required). Renew the App+User consent with a "
                "partner user who signs in with MFA."
            )
        return TechnicalFailure(
            f"Partner Center refused the token for {what} (401{coded}) even after a refresh; "
            "check the app registration and its consent"
        )
    if status in TECHNICAL_STATUSES or status >= 500:
        return TechnicalFailure(
            f"Partner Center answered {status} to {what}{coded}: {said}".rstrip(": ").strip(),
            retry_after=retry_after(response),
        )
    if status in BUSINESS_STATUSES and error.code:
        if error.code in TRANSIENT_CODES or error.is_retryable:
            return TechnicalFailure(
                f"Partner Center cannot do {what} right now ({status}{coded}): {said}".strip(),
                retry_after=retry_after(response),
            )
        reason = error.description or f"Partner Center refused {what} (code {error.code})."
        return BusinessRejection(reason, code=error.code)
    return TechnicalFailure(
        f"Partner Center answered {status} to {what}{coded or ' without an error code'}"
        + (f": {error.description}" if error.description else "")
    )


def classify_exception(error: Exception, what: str, *, sent_write: bool) -> TechnicalFailure:
    """The result for a call that got no answer. ``sent_write``: a write may have been sent,
    so a timeout or dropped connection leaves its outcome unknown."""
    if isinstance(error, TokenError):
        return TechnicalFailure(f"{what} was not sent: {error}")
    name = type(error).__name__
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return TechnicalFailure(f"could not connect to Partner Center for {what} ({name})")
    unknown = (
        "unknown outcome: Partner Center may have applied it; read the subscription back "
        "before sending the same request (same MS-RequestId) again"
    )
    if isinstance(error, httpx.TimeoutException):
        if sent_write:
            return TechnicalFailure(f"{what} timed out ({name}), {unknown}")
        return TechnicalFailure(f"Partner Center did not answer {what} in time ({name})")
    if isinstance(error, httpx.TransportError):
        if sent_write:
            return TechnicalFailure(f"the connection dropped during {what} ({name}), {unknown}")
        return TechnicalFailure(f"the connection dropped during {what} ({name})")
    return TechnicalFailure(f"{what} failed unexpectedly ({name})")
