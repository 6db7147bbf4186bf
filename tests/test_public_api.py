"""The public surface: what ``import imgrag`` offers, and what a wheel installs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import imgrag
import pytest

from tests.wheels import build_wheel

REPO = Path(__file__).resolve().parent.parent

PUBLIC = [
    "AsyncRetriever",
    "CollectionMismatch",
    "ConfigError",
    "ConnectorError",
    "CredentialError",
    "DaemonError",
    "EmbedderError",
    "FilterError",
    "QueryError",
    "Retriever",
    "SearchHit",
    "SearchQuery",
    "Settings",
    "StoreError",
    "StoreLocked",
    "load_settings",
]


def test_public_api_is_pinned() -> None:
    """Adding or removing a public name is a decision: change this list with it."""
    assert imgrag.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(imgrag, name) is not None, name
    # Nothing public lies around undeclared (submodules aside).
    undeclared = {
        n
        for n in dir(imgrag)
        if not n.startswith("_") and n not in PUBLIC and n not in ("pipeline", "connectors")
    }
    assert undeclared == set()


def test_errors_a_caller_catches_are_exceptions() -> None:
    for name in PUBLIC:
        if name.endswith("Error") or name in ("StoreLocked", "CollectionMismatch"):
            assert issubclass(getattr(imgrag, name), Exception), name
    assert issubclass(imgrag.StoreLocked, imgrag.ConnectorError)
    assert issubclass(imgrag.DaemonError, imgrag.QueryError)


def test_wheel_holds_only_the_imgrag_package(tmp_path: Path) -> None:
    """A wheel built from the repository installs ``imgrag`` and nothing else at the top
    level (``pipeline`` and ``connectors`` are taken on PyPI by unrelated projects)."""
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("pipeline", "connectors"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    wheel = build_wheel(source, tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"imgrag"}
    assert "imgrag/__init__.py" in names and "imgrag/py.typed" in names
    assert "imgrag/pipeline/query.py" in names and "imgrag/connectors/index.py" in names


def test_importing_imgrag_changes_no_environment() -> None:
    """A library never changes its host's environment on import (thread limits go on the
    calls that need them)."""
    code = (
        "import os; before = dict(os.environ); "
        "import imgrag, imgrag.connectors.stores, imgrag.connectors.tiny, imgrag.pipeline.cli; "
        "print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
