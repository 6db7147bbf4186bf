"""``import imgrag`` is light: each check runs in a fresh interpreter, so nothing this test
process loaded counts, and reads what it imported from ``-X importtime`` (which also works
through the console script) or from its ``sys.modules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.startup import HEAVY, heavy_in, imgrag_argv, imported_modules


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("IMGRAG_")}


def _sys_modules_after(code: str) -> list[str]:
    """``sys.modules`` of a fresh interpreter after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    loaded: list[str] = json.loads(run.stdout)
    return loaded


@pytest.mark.parametrize("module", ["imgrag", "imgrag._errors"])
def test_importing_loads_no_heavy_module(module: str) -> None:
    modules = imported_modules([sys.executable, "-c", f"import {module}"], _env())
    assert module in modules  # the report was read: the import itself is in it
    assert heavy_in(modules) == []
    loaded = _sys_modules_after(f"import {module}")
    assert module in loaded and heavy_in(loaded) == []


def test_the_lazy_names_load_on_first_use() -> None:
    """The heavy stacks arrive with the name that needs them, not before."""
    loaded = _sys_modules_after("import imgrag\nimgrag.Retriever")
    assert "imgrag.pipeline.retriever" in loaded
    assert "qdrant_client" in heavy_in(loaded)


def test_cli_help_loads_no_heavy_module() -> None:
    modules = imported_modules([*imgrag_argv(), "--help"], _env())
    assert "imgrag.pipeline.cli" in modules
    assert heavy_in(modules) == [], f"imgrag --help loads {heavy_in(modules)} (of {HEAVY})"


def test_status_without_a_daemon_loads_no_qdrant_client(tmp_path: os.PathLike[str]) -> None:
    """``imgrag status`` reads the embedded store (qdrant-edge) and builds no filter: the
    qdrant-client stack (over a second to import) stays out, and so do the model and the
    storage SDK."""
    env = {**_env(), "IMGRAG_STATE_DIR": str(tmp_path)}
    modules = imported_modules([*imgrag_argv(), "status"], env)
    assert "imgrag.pipeline.door" in modules  # the report was read: status ran
    assert "qdrant_client" not in modules and "onnxruntime" not in modules
    # The blob extra (when installed) waits for a blob source: this index has none.
    assert not [m for m in modules if m.startswith("azure.storage")]
