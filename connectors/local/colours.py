"""Dominant colours of an image, as weights over basic colour words.

ImageNet classes say nothing about colour, so "a red car" would match any car; this term
lets the colour words of a query meet the colours actually present in the image.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from imgrag.connectors.local.recipe import BASIC_COLOURS

_INDEX = {name: i for i, name in enumerate(BASIC_COLOURS)}


def _hsv(rgb: npt.NDArray[np.uint8]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rgb.reshape(-1, 3).astype(np.float32) / 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.max(axis=1)
    c = v - x.min(axis=1)
    s = np.where(v > 0, c / np.maximum(v, 1e-6), 0.0)
    safe = np.maximum(c, 1e-6)
    h = np.select(
        [v == r, v == g],
        [((g - b) / safe) % 6.0, (b - r) / safe + 2.0],
        (r - g) / safe + 4.0,
    )
    return h * 60.0, s, v


def colour_histogram(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Share of pixels per basic colour (order of BASIC_COLOURS); sums to 1."""
    h, s, v = _hsv(rgb)
    label = np.full(h.shape, _INDEX["gray"], dtype=np.int64)
    chromatic = (s >= 0.2) & (v >= 0.2)
    bands = [
        (_INDEX["red"], (h < 15) | (h >= 340)),
        (_INDEX["orange"], (h >= 15) & (h < 45)),
        (_INDEX["yellow"], (h >= 45) & (h < 70)),
        (_INDEX["green"], (h >= 70) & (h < 165)),
        (_INDEX["blue"], (h >= 165) & (h < 255)),
        (_INDEX["purple"], (h >= 255) & (h < 290)),
        (_INDEX["pink"], (h >= 290) & (h < 340)),
    ]
    for idx, band in bands:
        label[chromatic & band] = idx
    # Dark oranges and reds read as brown; pale reds and magentas read as pink.
    warm = chromatic & ((h < 45) | (h >= 340))
    label[warm & (v < 0.55) & (h >= 10) & (h < 45)] = _INDEX["brown"]
    label[warm & (s < 0.45) & (v >= 0.75) & ((h < 15) | (h >= 340))] = _INDEX["pink"]
    achromatic = ~chromatic
    label[achromatic & (v < 0.2)] = _INDEX["black"]
    label[achromatic & (v >= 0.2) & (s < 0.2) & (v >= 0.8)] = _INDEX["white"]
    counts = np.bincount(label, minlength=len(BASIC_COLOURS)).astype(np.float32)
    return counts / max(float(counts.sum()), 1.0)


def dominant_colour_weights(
    rgb: npt.NDArray[np.uint8], colours: tuple[str, ...], top: int
) -> npt.NDArray[np.float32]:
    """Weights over ``colours`` keeping only the ``top`` most frequent; sums to 1 (or all 0)."""
    return weights_from_histogram(colour_histogram(rgb), colours, top)


def weights_from_histogram(
    hist: npt.NDArray[np.float32], colours: tuple[str, ...], top: int
) -> npt.NDArray[np.float32]:
    """Like dominant_colour_weights, from a histogram already computed."""
    shares = np.array([hist[_INDEX[c]] if c in _INDEX else 0.0 for c in colours], np.float32)
    if top < len(shares):
        cutoff = np.sort(shares)[-top]
        shares = np.where(shares >= cutoff, shares, 0.0).astype(np.float32)
    total = float(shares.sum())
    return shares / total if total > 0 else shares
