"""The connectors' error names, kept here for the modules that import them from this path.

Every error class lives in ``imgrag._errors``, under ``imgrag.ImgragError``; new code imports
from there (or from ``imgrag``).
"""

from __future__ import annotations

from imgrag._errors import (
    CollectionMismatch,
    ConnectorError,
    CredentialError,
    DiskFull,
    EmbedderError,
    ExtraNotInstalled,
    InputTypeNotSupported,
    MalformedResponse,
    ModalityNotSupported,
    RequestRejected,
    StoreError,
    StoreLocked,
    TransientEmbedderError,
)

__all__ = [
    "CollectionMismatch",
    "ConnectorError",
    "CredentialError",
    "DiskFull",
    "EmbedderError",
    "ExtraNotInstalled",
    "InputTypeNotSupported",
    "MalformedResponse",
    "ModalityNotSupported",
    "RequestRejected",
    "StoreError",
    "StoreLocked",
    "TransientEmbedderError",
]
