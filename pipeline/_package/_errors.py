"""Every error imgrag raises on purpose, under one root: ``ImgragError``.

``except imgrag.ImgragError`` catches all of them. Each class keeps the is-a relations
callers rely on: ``StoreLocked`` is a ``StoreError`` is a ``ConnectorError``; ``FilterError``
and ``QueryError`` are ``ValueError`` s; ``ExtraNotInstalled`` is an ``ImportError`` too;
``DaemonError`` is a ``QueryError``. Messages are one line naming the cause and the fix, and
never hold a secret.

This module imports the standard library only, so ``import imgrag`` stays light; the other
modules import their error classes from here. Installed as ``imgrag._errors``: import the
names from ``imgrag``.

Kept private in their modules, because no caller ever sees them (each is raised and caught
inside one module): ``_Refused`` (sidecars), ``_TooManyInputs`` and
``_TooLarge`` (the Foundry client), and the emulator's ``ApiError`` and ``InputProblem``
(turned into HTTP answers before they leave the emulator).
"""

from __future__ import annotations


class ImgragError(Exception):
    """The root of every error imgrag raises on purpose."""


# --- configuration, sources, queries -------------------------------------------------------


class ConfigError(ImgragError):
    """A configuration file or override is invalid. The message is one line."""


class SourceError(ImgragError):
    """A folder or source name cannot be used as asked. The message is one line, with the fix."""


class FilterError(ImgragError, ValueError):
    """A filter the index cannot apply; the message names the key."""


class QueryError(ImgragError, ValueError):
    """The query cannot be run as asked (nothing to search by, a mode the model refuses)."""


class DaemonError(QueryError):
    """The daemon answered with an error, or stopped answering."""


class NotServable(ImgragError, LookupError):
    """The point, its file, or a thumbnail of it cannot be served; the message says why."""


# --- one file's problems (journaled; the pass goes on) --------------------------------------


class ItemReadError(ImgragError):
    """A ``Source`` could not hand over one item now; the indexer decides what follows.
    A new kind of source raises these three from its ``read``."""


class KeptChanging(ItemReadError):
    """The item changed while it was read; it is picked up again once stable."""


class ItemGone(ItemReadError):
    """The item was removed after it was listed; the deletion pass or the follower drops it."""


class ItemUnavailable(ItemReadError):
    """The item could not be read now (the store answered with an error): retried later."""


class ReadRefused(ImgragError):
    """The file is not one we read: outside the root, not a regular file, a link loop, or
    bigger than the limit. The message says which."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class ImageRejected(ImgragError):
    """This file cannot be embedded; ``reason`` is a short code for the failure journal."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SidecarError(ImgragError):
    """The sidecar exists but is not usable; the message says why."""


class PointRejected(ImgragError):
    """The store refused this one point while the rest of its batch landed."""


class UnstorablePayload(ImgragError):
    """The point's payload is not JSON a store can hold (a bug if it ever happens)."""


# --- run-level errors: the run stops --------------------------------------------------------


class FatalError(ImgragError):
    """The run cannot go on (bad credentials, wrong collection, ...). One line, with the fix."""


class PruneRefused(FatalError):
    """A pass would remove every point of a non-empty index; the user must confirm it."""


class DaemonFailed(FatalError):
    """A background task kept failing; the daemon stops rather than run as a zombie."""


class ServeError(FatalError):
    """The gallery cannot be served as asked; the message is one line with the fix."""


class StateNotWritable(FatalError):
    """The state directory (store, lock, journal) is read-only or not ours to write."""


# --- connectors -----------------------------------------------------------------------------


class ConnectorError(ImgragError):
    """Base class for every error a connector raises on purpose."""


class ExtraNotInstalled(ConnectorError, ImportError):
    """An optional dependency needed by the chosen provider or source is missing (an
    ImportError too, so optional imports and ``pytest.importorskip`` treat it as one)."""


class BackendUnavailable(ConnectorError):
    """The requested emulator backend cannot be loaded here."""


class WeightsError(ImgragError, ValueError):
    """A weights file that is not what the offline model expects."""


# --- embedders ------------------------------------------------------------------------------


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


# --- indexes --------------------------------------------------------------------------------


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


# --- Azure Blob Storage as a source ---------------------------------------------------------


class BlobConfigError(ImgragError, ValueError):
    """The blob source is not configured well enough to connect; the message names the fix."""


class BlobUriError(ImgragError, ValueError):
    """An ``az://`` address that cannot name a container; the message says what to write."""


class EventDecodeError(ImgragError, ValueError):
    """The message is not an Event Grid event; retrying it will not help."""


class BlobSourceError(ConnectorError):
    """Talking to Blob or Queue Storage failed after the retry policy gave up."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BlobTooLarge(BlobSourceError):
    """The blob is over the configured size limit; it was not read."""


class BlobGone(BlobSourceError):
    """The blob was deleted between listing and reading."""


class BlobKeptChanging(BlobSourceError):
    """The blob changed during every allowed download attempt."""


class SidecarInvalid(BlobSourceError):
    """A sidecar blob (``photo.txt`` / ``photo.json``) exists but cannot be used."""
