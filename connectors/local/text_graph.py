"""all-MiniLM-L6-v2's transformer body as an ONNX graph, assembled from its safetensors.

It is a BERT encoder (config.json: 6 layers, hidden 384, 12 heads, intermediate 1536,
exact GELU, LayerNorm eps 1e-12, absolute positions), evaluated as transformers' BertModel
does in eval mode: embeddings (word + position + token type) and LayerNorm, then per
layer softmax(QK^T / sqrt(d) + mask) V, output projection, residual and LayerNorm, then
the GELU feed-forward, residual and LayerNorm. Padded keys get float32's lowest value
added to their scores, so they weigh exactly zero. The graph outputs the last hidden
state; mean pooling and normalization stay in numpy (text_model.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from imgrag._errors import WeightsError
from imgrag.connectors.local.graph_builder import GraphBuilder

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Weights = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class BertConfig:
    """The parts of a BERT config.json the graph depends on."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    eps: float

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("hidden_act") != "gelu" or raw.get("position_embedding_type", "absolute") != (
            "absolute"
        ):
            raise WeightsError(f"{path}: only absolute positions and exact GELU are supported")
        return cls(
            hidden=int(raw["hidden_size"]),
            layers=int(raw["num_hidden_layers"]),
            heads=int(raw["num_attention_heads"]),
            intermediate=int(raw["intermediate_size"]),
            eps=float(raw["layer_norm_eps"]),
        )


class _Bert:
    def __init__(self, weights: Weights, config: BertConfig) -> None:
        self.w = weights
        self.c = config
        self.used: set[str] = set()
        self.g = GraphBuilder("minilm")

    def take(self, key: str) -> npt.NDArray[Any]:
        for name in (key, f"bert.{key}"):
            if name in self.w:
                self.used.add(name)
                return self.w[name]
        raise WeightsError(f"MiniLM weights lack {key}")

    def const(self, key: str, value: npt.ArrayLike | None = None) -> str:
        return self.g.const(key, self.take(key) if value is None else value)

    def linear(self, x: str, prefix: str) -> str:
        # torch stores (out, in); MatMul wants (in, out).
        w = self.g.const(f"{prefix}.weight", self.take(f"{prefix}.weight").T)
        y = self.g.op("MatMul", x, w)
        return self.g.op("Add", y, self.const(f"{prefix}.bias"))

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.g.op(
            "LayerNormalization",
            x,
            self.const(f"{prefix}.weight"),
            self.const(f"{prefix}.bias"),
            axis=-1,
            epsilon=self.c.eps,
        )

    def embeddings(self) -> str:
        g = self.g
        words = g.op("Gather", self.const("embeddings.word_embeddings.weight"), "input_ids")
        types = g.op(
            "Gather", self.const("embeddings.token_type_embeddings.weight"), "token_type_ids"
        )
        # Positions 0..t-1: the first t rows of the position table.
        shape = g.op("Shape", "input_ids")
        t = g.op("Slice", shape, g.const("one_1d", [1], np.int64), g.const("two_1d", [2], np.int64))
        positions = g.op(
            "Slice",
            self.const("embeddings.position_embeddings.weight"),
            g.const("zero_1d", [0], np.int64),
            t,
            g.const("axis0_1d", [0], np.int64),
        )
        x = g.op("Add", g.op("Add", words, types), positions)
        self.used.add("embeddings.position_ids")
        self.used.add("bert.embeddings.position_ids")
        return self.layer_norm(x, "embeddings.LayerNorm")

    def mask_bias(self) -> str:
        g = self.g
        keep = g.op("Cast", "attention_mask", to=9)  # bool
        keep = g.op("Unsqueeze", keep, g.const("axes_1_2", [1, 2], np.int64))  # (b, 1, 1, t)
        lowest = g.const("lowest", np.float32(np.finfo(np.float32).min))
        return g.op("Where", keep, g.const("zero_f", np.float32(0.0)), lowest)

    def heads(self, x: str, keys: bool = False) -> str:
        g = self.g
        head_dim = self.c.hidden // self.c.heads
        split = g.const("split_heads", [0, 0, self.c.heads, head_dim], np.int64)
        y = g.op("Reshape", x, split)  # (b, t, h, d)
        return g.op("Transpose", y, perm=[0, 2, 3, 1] if keys else [0, 2, 1, 3])

    def layer(self, x: str, i: int, bias: str) -> str:
        g = self.g
        p = f"encoder.layer.{i}"
        q = self.heads(self.linear(x, f"{p}.attention.self.query"))
        k = self.heads(self.linear(x, f"{p}.attention.self.key"), keys=True)
        v = self.heads(self.linear(x, f"{p}.attention.self.value"))
        scale = g.const(
            "attention_scale", np.float32(1.0 / math.sqrt(self.c.hidden // self.c.heads))
        )
        scores = g.op("Mul", g.op("MatMul", q, k), scale)
        probs = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
        context = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        context = g.op("Reshape", context, g.const("merge_heads", [0, 0, self.c.hidden], np.int64))
        attended = self.linear(context, f"{p}.attention.output.dense")
        x = self.layer_norm(g.op("Add", attended, x), f"{p}.attention.output.LayerNorm")
        h = self.linear(x, f"{p}.intermediate.dense")
        # Exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
        erf = g.op("Erf", g.op("Div", h, g.const("sqrt2", np.float32(math.sqrt(2.0)))))
        gelu = g.op(
            "Mul",
            g.op("Mul", h, g.op("Add", erf, g.const("one_f", np.float32(1.0)))),
            g.const("half_f", np.float32(0.5)),
        )
        out = self.linear(gelu, f"{p}.output.dense")
        return self.layer_norm(g.op("Add", out, x), f"{p}.output.LayerNorm")

    def build(self) -> Any:
        from onnx import TensorProto, helper

        x = self.embeddings()
        bias = self.mask_bias()
        for i in range(self.c.layers):
            x = self.layer(x, i, bias)
        self.g.op("Identity", x, output="hidden")
        # The pooler (CLS projection) is not part of a sentence-transformers embedding.
        unused = sorted(k for k in set(self.w) - self.used if "pooler" not in k)
        if unused:
            raise WeightsError(f"MiniLM weights hold unexpected tensors: {unused[:3]}")
        inputs = [
            helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "tokens"])
            for name in INPUTS
        ]
        hidden = helper.make_tensor_value_info(
            "hidden", TensorProto.FLOAT, ["batch", "tokens", self.c.hidden]
        )
        return self.g.model(inputs, [hidden], "all-MiniLM-L6-v2 last hidden state, built by imgrag")


def build_minilm(weights: Weights, config: BertConfig) -> Any:
    """The ONNX model: int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` (n, t) to
    float ``hidden`` (n, t, hidden)."""
    return _Bert(weights, config).build()
