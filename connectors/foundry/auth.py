"""Credentials for Foundry requests: an API key, or Microsoft Entra ID tokens."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, Protocol

from imgrag._errors import CredentialError
from pydantic import SecretStr

# Refresh a token this long before it expires, so no request leaves with a dying token.
REFRESH_MARGIN_SECONDS = 300.0


class Auth(Protocol):
    kind: str

    async def headers(self) -> dict[str, str]: ...

    async def refresh(self) -> bool:
        """Get fresh credentials after a 401; False when there is nothing to refresh."""
        ...

    async def aclose(self) -> None: ...


class KeyAuth:
    """Sends the API key as ``api-key`` and as ``Authorization: Bearer``.

    Foundry resources read ``api-key``; serverless and managed endpoints read only the
    Bearer header. Microsoft's azure-ai-inference SDK sends both for that reason.
    """

    kind = "key"

    def __init__(self, key: SecretStr | None) -> None:
        if key is None or not key.get_secret_value():
            raise CredentialError(
                "no API key: set AZURE_INFERENCE_CREDENTIAL to the deployment's key, "
                'or use [embedder] auth = "entra" for Microsoft Entra ID'
            )
        self._key = key

    def __repr__(self) -> str:
        return "KeyAuth(key=**********)"

    async def headers(self) -> dict[str, str]:
        key = self._key.get_secret_value()
        return {"api-key": key, "Authorization": f"Bearer {key}"}

    async def refresh(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None


class EntraAuth:
    """Bearer tokens from an azure-identity credential, cached until shortly before expiry."""

    kind = "entra"

    def __init__(
        self,
        credential: Any,
        scope: str,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = wall_clock
        self._token: SecretStr | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"EntraAuth(scope={self._scope!r})"

    async def _fetch(self) -> None:
        try:
            get_token = self._credential.get_token
            if inspect.iscoroutinefunction(get_token):
                result = await get_token(self._scope)
            else:  # sync credentials (e.g. the browser flow) must not block the event loop
                result = await asyncio.to_thread(get_token, self._scope)
        except Exception as exc:  # azure-identity raises many types; name the cause, not the token
            raise CredentialError(
                f"could not get a Microsoft Entra ID token for {self._scope}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                "(sign in with `az login`, or set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                "AZURE_CLIENT_SECRET)"
            ) from None
        self._token = SecretStr(result.token)
        self._expires_on = float(result.expires_on)

    async def headers(self) -> dict[str, str]:
        async with self._lock:
            if self._token is None or self._expires_on - self._clock() < REFRESH_MARGIN_SECONDS:
                await self._fetch()
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token.get_secret_value()}"}

    async def refresh(self) -> bool:
        async with self._lock:
            await self._fetch()
        return True

    async def aclose(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


def default_entra_credential(interactive: bool) -> Any:
    """DefaultAzureCredential (async), or the interactive browser flow only when asked."""
    if interactive:
        from azure.identity import InteractiveBrowserCredential

        return InteractiveBrowserCredential()
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()
