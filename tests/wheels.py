"""Building imgrag's wheel from a source tree, the way ``pip install .`` builds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class WheelBuildFailed(Exception):
    """pip could not build a wheel from the tree; the message is pip's stderr."""


def build_wheel(source: Path, out: Path) -> Path:
    """Build the wheel of the project in ``source`` into ``out`` (no dependencies, and with
    the setuptools this environment has, so nothing is downloaded) and return its path."""
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    run = subprocess.run(
        [*pip, "-w", str(out), str(source)], capture_output=True, text=True, timeout=300
    )
    if run.returncode != 0:
        raise WheelBuildFailed(run.stderr.strip() or f"pip exited with {run.returncode}")
    [wheel] = out.glob("imgrag-*.whl")
    return wheel
