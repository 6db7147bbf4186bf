"""imgrag: turn a folder of images into a searchable vector index.

>>> from imgrag import Retriever
>>> with Retriever.from_config() as r:
...     for hit in r.search("a cat on a sofa", limit=3):
...         print(hit.score, hit.abs_path)

This file is the root of the installed ``imgrag`` package (pyproject maps it there); the
folders ``pipeline/`` and ``connectors/`` install as ``imgrag.pipeline`` and
``imgrag.connectors``. The names below are the public API; everything else may change.

``import imgrag`` is light: the errors (all under ``ImgragError``) load with it, the rest on
first use (``imgrag.Retriever`` imports the retriever, its models and stores then).
"""

import importlib as _importlib

from imgrag._errors import (
    BackendUnavailable,
    BlobConfigError,
    BlobGone,
    BlobKeptChanging,
    BlobSourceError,
    BlobTooLarge,
    BlobUriError,
    CollectionMismatch,
    ConfigError,
    ConnectorError,
    CredentialError,
    DaemonError,
    DaemonFailed,
    DiskFull,
    EmbedderError,
    EventDecodeError,
    ExtraNotInstalled,
    FatalError,
    FilterError,
    ImageRejected,
    ImgragError,
    InputTypeNotSupported,
    ItemGone,
    ItemReadError,
    ItemUnavailable,
    KeptChanging,
    MalformedResponse,
    ModalityNotSupported,
    NotServable,
    PointRejected,
    PruneRefused,
    QueryError,
    ReadRefused,
    RequestRejected,
    ServeError,
    SidecarError,
    SidecarInvalid,
    SourceError,
    StateNotWritable,
    StoreError,
    StoreLocked,
    TransientEmbedderError,
    UnstorablePayload,
    WeightsError,
)

# typing.TYPE_CHECKING without importing typing (half of this module's import time); type
# checkers take any name TYPE_CHECKING as true. Deleted below: it is not a public name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from imgrag.pipeline.config import Settings, load_settings
    from imgrag.pipeline.query import SearchQuery
    from imgrag.pipeline.retrieval import SearchHit
    from imgrag.pipeline.retriever import AsyncRetriever, Retriever

# The names loaded on first use, and the module each comes from.
_LAZY = {
    "AsyncRetriever": "imgrag.pipeline.retriever",
    "Retriever": "imgrag.pipeline.retriever",
    "SearchHit": "imgrag.pipeline.retrieval",
    "SearchQuery": "imgrag.pipeline.query",
    "Settings": "imgrag.pipeline.config",
    "load_settings": "imgrag.pipeline.config",
}
del TYPE_CHECKING

__all__ = [
    "AsyncRetriever",
    "BackendUnavailable",
    "BlobConfigError",
    "BlobGone",
    "BlobKeptChanging",
    "BlobSourceError",
    "BlobTooLarge",
    "BlobUriError",
    "CollectionMismatch",
    "ConfigError",
    "ConnectorError",
    "CredentialError",
    "DaemonError",
    "DaemonFailed",
    "DiskFull",
    "EmbedderError",
    "EventDecodeError",
    "ExtraNotInstalled",
    "FatalError",
    "FilterError",
    "ImageRejected",
    "ImgragError",
    "InputTypeNotSupported",
    "ItemGone",
    "ItemReadError",
    "ItemUnavailable",
    "KeptChanging",
    "MalformedResponse",
    "ModalityNotSupported",
    "NotServable",
    "PointRejected",
    "PruneRefused",
    "QueryError",
    "ReadRefused",
    "RequestRejected",
    "Retriever",
    "SearchHit",
    "SearchQuery",
    "ServeError",
    "Settings",
    "SidecarError",
    "SidecarInvalid",
    "SourceError",
    "StateNotWritable",
    "StoreError",
    "StoreLocked",
    "TransientEmbedderError",
    "UnstorablePayload",
    "WeightsError",
    "load_settings",
]


def __getattr__(name: str) -> object:
    """Load a lazy public name (PEP 562) and keep it, so the next lookup is a plain one."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imgrag' has no attribute {name!r}")
    value: object = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names whether loaded yet or not, and what this module already holds."""
    return sorted({*globals(), *__all__})
