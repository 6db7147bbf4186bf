"""Shared onnxruntime session settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_session(path: Path) -> Any:
    """A CPU inference session with full graph optimizations; imported lazily (optional extra)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Quiet: ORT warns about unused initializers that the torch exporter leaves behind.
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
