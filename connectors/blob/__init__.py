"""Azure Blob Storage as a source: listing, reconcile, downloads and queue events.

Needs the ``blob`` extra (azure-storage-blob, azure-storage-queue). Nothing here knows
the index: the pipeline hands in stored state and gets plain decisions back.
"""

from __future__ import annotations

from imgrag._errors import ExtraNotInstalled

try:
    import azure.storage.blob
    import azure.storage.queue  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ExtraNotInstalled(
        f"the blob source needs the `blob` extra ({exc.name} is missing); "
        'install it with `pip install "imgrag[blob]"`'
    ) from None

from .clients import open_container, open_queue
from .config import BlobSourceConfig
from .download import Downloaded, SidecarData, download_to, read_sidecars
from .events import BlobEvent, decode_message
from .listing import BlobEntry, Listing
from .reconcile import (
    BlobState,
    Decision,
    Reconciler,
    ReconcileResult,
    is_image_name,
    reconcile,
    sidecar_names,
)
from .secrets import redact
from .uri import BlobLocation, blob_url, parse_az_uri, without_query
from .worker import PoisonMessage, QueueWorker, WorkerStats

__all__ = [
    "BlobEntry",
    "BlobEvent",
    "BlobLocation",
    "BlobSourceConfig",
    "BlobState",
    "Decision",
    "Downloaded",
    "Listing",
    "PoisonMessage",
    "QueueWorker",
    "ReconcileResult",
    "Reconciler",
    "SidecarData",
    "WorkerStats",
    "blob_url",
    "decode_message",
    "download_to",
    "is_image_name",
    "open_container",
    "open_queue",
    "parse_az_uri",
    "read_sidecars",
    "reconcile",
    "redact",
    "sidecar_names",
    "without_query",
]
