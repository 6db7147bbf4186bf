"""imgrag: turn a folder of images into a searchable vector index.

>>> from imgrag import Retriever
>>> with Retriever.from_config() as r:
...     for hit in r.search("a cat on a sofa", limit=3):
...         print(hit.score, hit.abs_path)

This file is the root of the installed ``imgrag`` package (pyproject maps it there); the
folders ``pipeline/`` and ``connectors/`` install as ``imgrag.pipeline`` and
``imgrag.connectors``. The names below are the public API; everything else may change.
"""

from imgrag.connectors.errors import (
    CollectionMismatch,
    ConnectorError,
    CredentialError,
    EmbedderError,
    StoreError,
    StoreLocked,
)
from imgrag.pipeline.config import ConfigError, Settings, load_settings
from imgrag.pipeline.daemon_client import DaemonError
from imgrag.pipeline.filters import FilterError
from imgrag.pipeline.query import QueryError, SearchQuery
from imgrag.pipeline.retrieval import SearchHit
from imgrag.pipeline.retriever import AsyncRetriever, Retriever

__all__ = [
    "AsyncRetriever",
    "CollectionMismatch",
    "ConfigError",
    "ConnectorError",
    "CredentialError",
    "DaemonError",
    "EmbedderError",
    "FilterError",
    "QueryError",
    "Retriever",
    "SearchHit",
    "SearchQuery",
    "Settings",
    "StoreError",
    "StoreLocked",
    "load_settings",
]
