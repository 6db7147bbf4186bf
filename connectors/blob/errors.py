"""Errors of the blob source: one line, the cause and the fix, never a secret."""

from __future__ import annotations

from collections.abc import Iterable

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError
from imgrag._errors import BlobSourceError

from .secrets import redact


def describe(exc: BaseException, secrets: Iterable[str] = ()) -> tuple[str, int | None, str | None]:
    """A one-line, redacted description of an Azure SDK error, its status and error code."""
    status: int | None = None
    code: str | None = None
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        raw = getattr(exc, "error_code", None) or exc.reason
        code = str(getattr(raw, "value", raw)) if raw else None
        text = f"HTTP {status} {code or ''}".strip()
        hint = {
            401: "check the credential",
            403: "check the credential and its role or SAS permissions (list, read)",
            404: "check the account, container and queue names",
        }.get(status or 0)
        if hint:
            text += f"; {hint}"
    elif isinstance(exc, ServiceRequestError):
        text = "cannot reach the storage endpoint; check the account URL and the network"
    elif isinstance(exc, AzureError):
        text = type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text, secrets).splitlines()[0] if text else type(exc).__name__, status, code


def wrap(exc: BaseException, what: str, secrets: Iterable[str] = ()) -> BlobSourceError:
    """A :class:`BlobSourceError` for ``what`` failing with ``exc``; the SDK text is dropped."""
    text, status, code = describe(exc, secrets)
    return BlobSourceError(redact(f"{what}: {text}", secrets), status=status, code=code)
