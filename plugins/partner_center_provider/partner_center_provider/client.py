"""A small HTTP client for the Partner Center REST API (v1).

Every call carries the documented headers: ``Authorization: Bearer``, ``Accept``,
``Content-Type`` on writes, ``MS-RequestId`` (the idempotency key: the same value on every
attempt of one operation), ``MS-CorrelationId`` (new on every call), ``MS-Contract-Version: v1``
and ``MS-PartnerCenter-Application``. Bodies are camelCase JSON. A timeout is always set.

A ``401`` makes the client ask its token provider for a new token once and send the request
again (same ``MS-RequestId``); a second ``401`` is returned to the caller. Nothing else is
retried here: the adapter classifies the answer and the portal's outbox retries.
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import lru_cache
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from partner_center_provider.auth import TokenProvider

log = logging.getLogger(__name__)

USER_AGENT = "csp-portal-partner-center/0.1"
# MS-RequestId must be a GUID: an operation id that is not one is mapped to one, always the same
REQUEST_ID_NAMESPACE = uuid.UUID("0b6f6d4e-5a6c-4c39-9d8e-3f1f0c4f2a11")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def ms_request_id(request_id: str | None = None) -> str:
    """The ``MS-RequestId`` for an operation: ``request_id`` itself when it is a GUID, else a
    GUID derived from it (uuid5, stable across attempts and processes); a new one for None."""
    if request_id is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        return str(uuid.uuid5(REQUEST_ID_NAMESPACE, request_id))


@lru_cache(maxsize=4096)
def _absolute_url(base_url: str, path: str) -> httpx.URL:
    """The parsed URL of a path under the base: the same few subscription paths are called
    over and over, and parsing one (httpx validates every character) cost more than a third of
    building a request."""
    return httpx.URL(f"{base_url}/{path.lstrip('/')}")


class PartnerCenterClient:
    """Thread-safe (one pooled ``httpx.Client``); one instance per adapter."""

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider,
        *,
        timeout: float = 10.0,
        application_name: str = "CSP Portal",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = token_provider
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            headers={
                "Accept": "application/json",
                "MS-Contract-Version": "v1",
                "MS-PartnerCenter-Application": application_name,
                "User-Agent": USER_AGENT,
            },
            follow_redirects=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            transport=transport,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        request_id: str | None = None,
        if_match: str | None = None,
    ) -> httpx.Response:
        """Send one call (and once more after a ``401`` with a refreshed token).

        ``request_id`` is the operation's stable id (mapped to a GUID by
        :func:`ms_request_id`); reads may leave it out and get a new one. Raises
        ``httpx.HTTPError`` for transport failures and
        :class:`~partner_center_provider.auth.TokenError` when no token can be had.
        """
        method = method.upper()
        headers = {"MS-RequestId": ms_request_id(request_id)}
        if if_match:
            headers["If-Match"] = if_match
        token = self.tokens.token(force_refresh=False)
        response = self._send(method, path, json, params, headers, token)
        if response.status_code == 401:
            log.info("partner center: %s %s answered 401; refreshing the token once", method, path)
            token = self.tokens.token(force_refresh=True)
            response = self._send(method, path, json, params, headers, token)
        return response

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        params: dict[str, str] | None,
        headers: dict[str, str],
        token: str,
    ) -> httpx.Response:
        call_headers = {
            **headers,
            "Authorization": f"Bearer {token}",
            "MS-CorrelationId": str(uuid.uuid4()),
        }
        started = time.monotonic()
        try:
            response = self._http.request(
                method,
                _absolute_url(self.base_url, path),
                json=body if method in WRITE_METHODS else None,
                params=params,
                headers=call_headers,
            )
        except httpx.HTTPError as error:
            log.info(
                "partner center: %s %s failed after %.0f ms: %s (MS-RequestId %s)",
                method,
                path,
                (time.monotonic() - started) * 1000,
                type(error).__name__,
                headers["MS-RequestId"],
            )
            raise
        log.debug(
            "partner center: %s %s -> %s in %.0f ms (MS-RequestId %s, MS-CorrelationId %s)",
            method,
            path,
            response.status_code,
            (time.monotonic() - started) * 1000,
            headers["MS-RequestId"],
            call_headers["MS-CorrelationId"],
        )
        return response

    def same_origin_path(self, location: str) -> str | None:
        """``location`` (absolute or relative) as a path on this API, or None when it points
        elsewhere (the bearer token is never sent to another host)."""
        absolute = urljoin(self.base_url + "/", location)
        ours, theirs = urlsplit(self.base_url), urlsplit(absolute)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            return None
        path = theirs.path
        if ours.path and path.startswith(ours.path + "/"):
            path = path[len(ours.path) :]  # httpx puts the base URL's path back in front
        return path + (f"?{theirs.query}" if theirs.query else "")

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"PartnerCenterClient({self.base_url!r}, timeout={self.timeout})"
