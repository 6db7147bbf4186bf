"""imgrag: turn a folder of images into a searchable vector index.

>>> from pipeline import Retriever
>>> with Retriever.from_config() as r:
...     for hit in r.search(text="a cat on a sofa", limit=3):
...         print(hit.score, hit.abs_path)
"""

import connectors  # noqa: F401  (first: it limits numpy's threads before numpy loads)
from pipeline.retrieval import SearchHit
from pipeline.retriever import AsyncRetriever, Retriever

__all__ = ["AsyncRetriever", "Retriever", "SearchHit"]
