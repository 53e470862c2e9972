"""Access tokens for Partner Center.

The client only knows :class:`TokenProvider`. In production :class:`MsalTokenProvider` exchanges
the partner's App+User refresh token (secure application model, consent given once with MFA)
for an access token with Microsoft's own library, msal, and keeps the rotated refresh token.
Tests use :class:`StaticTokenProvider`. Tokens and secrets are never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import msal  # type: ignore[import-untyped]

from partner_center_provider.settings import PartnerCenterSettings

log = logging.getLogger(__name__)

PARTNER_CENTER_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"
# renew an access token this long before it expires, so no call goes out with a dying one
EXPIRY_MARGIN_SECONDS = 300


class TokenError(RuntimeError):
    """No access token could be had (the message carries no secret)."""


@runtime_checkable
class TokenProvider(Protocol):
    def token(self, force_refresh: bool = False) -> str:
        """A bearer token for Partner Center; a new one when ``force_refresh`` (after a 401)."""
        ...


class StaticTokenProvider:
    """Hands out ``tokens[0]``; each forced refresh moves to the next (the last one stays).

    ``refreshes`` counts the forced refreshes, so a test can check the client asked once.
    """

    def __init__(self, tokens: str | Sequence[str] = "test-token") -> None:
        self._tokens = [tokens] if isinstance(tokens, str) else list(tokens)
        if not self._tokens:
            raise ValueError("StaticTokenProvider needs at least one token")
        self._index = 0
        self._lock = threading.Lock()
        self.refreshes = 0

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            if force_refresh:
                self.refreshes += 1
                self._index = min(self._index + 1, len(self._tokens) - 1)
            return self._tokens[self._index]

    def __repr__(self) -> str:
        return f"StaticTokenProvider(refreshes={self.refreshes})"


class MsalTokenProvider:
    """App+User tokens: the stored refresh token exchanged through msal.

    The exchange asks for ``PARTNER_CENTER_SCOPE`` on the partner's tenant authority. Entra
    answers with an access token and usually a new refresh token, which replaces the old one in
    memory (``on_refresh_token`` is told, so the caller can persist it in a secret store). The
    access token is reused until ``EXPIRY_MARGIN_SECONDS`` before it expires. Nothing touches
    the network before the first call of :meth:`token`.

    ``http_client`` (an object with ``get``/``post`` like ``requests.Session``) and
    ``instance_discovery`` go to msal unchanged; tests use them to reach a local token endpoint.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        authority: str,
        *,
        scope: str = PARTNER_CENTER_SCOPE,
        timeout: float = 10.0,
        http_client: Any = None,
        instance_discovery: bool | None = None,
        on_refresh_token: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._authority = authority
        self._scope = scope
        self._timeout = timeout
        self._http_client = http_client
        self._instance_discovery = instance_discovery
        self._on_refresh_token = on_refresh_token
        self._clock = clock
        self._lock = threading.Lock()
        self._app: Any = None
        self._access_token: str | None = None
        self._expires_at = 0.0
        self.refreshes = 0

    @classmethod
    def from_settings(cls, settings: PartnerCenterSettings, **options: Any) -> MsalTokenProvider:
        return cls(
            settings.client_id,
            settings.client_secret,
            settings.refresh_token,
            settings.authority,
            timeout=settings.timeout_seconds,
            **options,
        )

    @property
    def current_refresh_token(self) -> str:
        """The refresh token as it now stands (rotated by the last exchange)."""
        with self._lock:
            return self._refresh_token

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            fresh = self._expires_at - EXPIRY_MARGIN_SECONDS > self._clock()
            if self._access_token and fresh and not force_refresh:
                return self._access_token
            return self._exchange()

    def _exchange(self) -> str:
        try:
            result = self._application().acquire_token_by_refresh_token(
                self._refresh_token, scopes=[self._scope]
            )
        except Exception as error:  # msal raises for discovery and transport failures
            raise TokenError(
                f"could not reach Microsoft Entra ID for a Partner Center token "
                f"({type(error).__name__})"
            ) from None
        if not isinstance(result, dict) or "access_token" not in result:
            details = result if isinstance(result, dict) else {}
            code = str(details.get("error") or "no access token")
            description = str(details.get("error_description") or "").splitlines()
            raise TokenError(
                f"Microsoft Entra ID refused the refresh token exchange: {code}"
                + (f" ({description[0][:300]})" if description else "")
            )
        self._access_token = str(result["access_token"])
        self._expires_at = self._clock() + float(result.get("expires_in") or 3600)
        self.refreshes += 1
        rotated = result.get("refresh_token")
        if rotated and rotated != self._refresh_token:
            self._refresh_token = str(rotated)
            if self._on_refresh_token is not None:
                self._on_refresh_token(self._refresh_token)
        log.info("partner center: new access token (expires in %ss)", result.get("expires_in"))
        return self._access_token

    def _application(self) -> Any:
        if self._app is None:
            options: dict[str, Any] = {
                "client_credential": self._client_secret,
                "authority": self._authority,
                "timeout": self._timeout,
            }
            if self._http_client is not None:
                options["http_client"] = self._http_client
            if self._instance_discovery is not None:
                options["instance_discovery"] = self._instance_discovery
            self._app = msal.ConfidentialClientApplication(self._client_id, **options)
        return self._app

    def __repr__(self) -> str:
        return f"MsalTokenProvider(authority={self._authority!r}, refreshes={self.refreshes})"
