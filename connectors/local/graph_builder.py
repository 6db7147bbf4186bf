"""A small helper for writing ONNX graphs by hand with ``onnx.helper``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

OPSET = 17
# IR version 8 goes with opset 17; onnx.helper would otherwise stamp its own newest IR
# version, which an older onnxruntime refuses to load.
IR_VERSION = 8


class GraphBuilder:
    """Collects nodes and initializers; every node gets a unique, readable output name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: set[str] = set()
        self._count = 0

    def const(self, name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        """Add an initializer (once per name: shared constants reuse it) and return its name."""
        from onnx import numpy_helper

        if name in self._names:
            return name
        self._names.add(name)
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, name: str = "", output: str = "", **attrs: Any) -> str:
        """Add one node with a single output (``output``, else a fresh name); return it."""
        from onnx import helper

        self._count += 1
        out = output or f"{name or op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def model(self, inputs: list[Any], outputs: list[Any], doc: str) -> Any:
        """The finished, checked model."""
        import onnx
        from onnx import helper

        graph = helper.make_graph(
            self.nodes, self.name, inputs, outputs, initializer=self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="imgrag",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model
