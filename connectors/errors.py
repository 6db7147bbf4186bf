"""Errors raised by connectors. Each message is one line naming the cause and the fix."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class for every error a connector raises on purpose."""


# --- embedders -------------------------------------------------------------------------


class EmbedderError(ConnectorError):
    """An embedding request could not be completed."""


class CredentialError(EmbedderError):
    """Missing or rejected credentials (never includes the secret itself)."""


class ModalityNotSupported(EmbedderError):
    """The model does not serve this kind of input (HTTP 404 from Foundry)."""


class InputTypeNotSupported(EmbedderError):
    """The model rejected a parameter such as ``input_type`` (HTTP 422 from Foundry)."""


class RequestRejected(EmbedderError):
    """The service rejected the input permanently (4xx); retrying the same input will not help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientEmbedderError(EmbedderError):
    """The service stayed unavailable or throttled after every allowed attempt."""

    def __init__(self, message: str, *, attempts: int, status: int | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status


class MalformedResponse(EmbedderError):
    """The service answered with something that is not a valid embeddings response."""


class ExtraNotInstalled(ConnectorError, ImportError):
    """An optional dependency needed by the chosen provider or source is missing (an
    ImportError too, so optional imports and ``pytest.importorskip`` treat it as one)."""


# --- indexes ---------------------------------------------------------------------------


class StoreError(ConnectorError):
    """The vector store failed or is unreachable."""


class StoreLocked(StoreError):
    """The embedded store is already open in another process."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class CollectionMismatch(StoreError):
    """The collection was created for another model, dimension or distance."""


class DiskFull(StoreError):
    """The filesystem under the state directory has no room for the next write."""

    def __init__(self, directory: str, free_mb: int, need_mb: int) -> None:
        super().__init__(
            f"no space left under {directory}: {free_mb} MB free, need {need_mb}; "
            "free some space there and run again (nothing indexed is lost)"
        )
        self.directory = directory
        self.free_mb = free_mb
        self.need_mb = need_mb
