"""imgrag: turn a folder of images into a searchable vector index.

>>> from imgrag import Retriever
>>> with Retriever.from_config() as r:
...     for hit in r.search(text="a cat on a sofa", limit=3):
...         print(hit.score, hit.abs_path)

This file is the root of the installed ``imgrag`` package (pyproject maps it there); the
folders ``pipeline/`` and ``connectors/`` install as ``imgrag.pipeline`` and
``imgrag.connectors``.
"""

from imgrag.pipeline.retrieval import SearchHit
from imgrag.pipeline.retriever import AsyncRetriever, Retriever

__all__ = ["AsyncRetriever", "Retriever", "SearchHit"]
