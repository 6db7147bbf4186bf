"""qdrant-client's models (filters, conditions), imported on their first use.

Importing qdrant-client takes over a second: it brings its REST and gRPC clients along with
the models. A command that reads the embedded store without building a filter (``imgrag
status``, ``imgrag --help``) never needs them, so the modules that build filters take them
from here::

    if TYPE_CHECKING:
        from qdrant_client.http import models as qm
    else:
        from imgrag.connectors._qdrant_models import qm

mypy sees the real module; at run time the first attribute read imports it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_MODELS = "qdrant_client.http.models"


class _OnFirstUse:
    """Stands for ``qdrant_client.http.models`` until an attribute of it is read."""

    __slots__ = ("_module",)

    def __init__(self) -> None:
        self._module: ModuleType | None = None

    def __getattr__(self, name: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(_MODELS)
        return getattr(module, name)


qm: Any = _OnFirstUse()
