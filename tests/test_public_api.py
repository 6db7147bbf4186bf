"""The public surface: what ``import imgrag`` offers, and what a wheel installs."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import imgrag
import imgrag._errors
import pytest

from tests.wheels import build_wheel

REPO = Path(__file__).resolve().parent.parent

# The public names that are not errors. Adding or removing one is a decision: change this
# list with it. The errors are derived from imgrag._errors, where every one of them lives.
NOT_ERRORS = [
    "AsyncRetriever",
    "Retriever",
    "SearchHit",
    "SearchQuery",
    "Settings",
    "load_settings",
]
SUBPACKAGES = {"connectors", "pipeline"}


def surface_problems(package: ModuleType, errors: ModuleType) -> list[str]:
    """What is wrong with ``package``'s public surface, derived from the package itself and
    its errors module (the way httpx checks its own ``__all__``); empty when nothing is."""
    exported: list[str] = list(package.__all__)
    problems = [f"{n} is in __all__ but does not resolve" for n in exported if not _has(package, n)]
    if exported != sorted(set(exported)):
        problems.append("__all__ is not sorted or has duplicates")
    defined = {
        name
        for name, value in vars(errors).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == errors.__name__
    }
    problems += [
        f"{n} is defined in {errors.__name__} but not exported" for n in defined - {*exported}
    ]
    values = {n: getattr(package, n) for n in exported if _has(package, n)}
    is_error = {n for n, v in values.items() if inspect.isclass(v) and issubclass(v, BaseException)}
    problems += [
        f"{n} is not an ImgragError"
        for n in is_error
        if not issubclass(values[n], errors.ImgragError)
    ]
    problems += [
        f"{n} is exported but not defined in {errors.__name__}" for n in is_error - defined
    ]
    if sorted({*exported} - is_error) != NOT_ERRORS:
        problems.append(f"the names that are not errors changed: {sorted({*exported} - is_error)}")
    public = {n for n in dir(package) if not n.startswith("_")} - SUBPACKAGES
    if public != set(exported):
        problems.append(f"dir() and __all__ differ: {sorted(public ^ set(exported))}")
    return problems


def _has(module: ModuleType, name: str) -> bool:
    try:
        getattr(module, name)
    except AttributeError:
        return False
    return True


def test_public_api_is_pinned() -> None:
    """Every exported name resolves, every error is exported and under ImgragError, nothing
    public lies around undeclared, and the other names are the pinned list."""
    assert surface_problems(imgrag, imgrag._errors) == []


def _copy_of_imgrag() -> ModuleType:
    """A stand-in module with imgrag's surface, to show the check can fail."""
    copy = ModuleType("imgrag_copy")
    for name in imgrag.__all__:
        setattr(copy, name, getattr(imgrag, name))
    copy.__all__ = list(imgrag.__all__)  # type: ignore[attr-defined]
    return copy


def test_the_pin_fails_on_a_stray_name_or_a_dropped_error() -> None:
    stray = _copy_of_imgrag()
    stray.helper = len  # type: ignore[attr-defined]
    assert any("dir() and __all__ differ" in p for p in surface_problems(stray, imgrag._errors))
    dropped = _copy_of_imgrag()
    dropped.__all__.remove("StoreLocked")  # type: ignore[attr-defined]
    problems = surface_problems(dropped, imgrag._errors)
    assert "StoreLocked is defined in imgrag._errors but not exported" in problems
    extra = _copy_of_imgrag()
    extra.__all__ = sorted([*extra.__all__, "Path"])  # type: ignore[attr-defined]
    extra.Path = Path  # type: ignore[attr-defined]
    assert any("not errors changed" in p for p in surface_problems(extra, imgrag._errors))


def test_lazy_names_are_listed_before_they_load() -> None:
    """dir() shows the lazy names whether or not they have loaded; an unknown name is an
    AttributeError naming it."""
    assert set(NOT_ERRORS) <= set(dir(imgrag))
    with pytest.raises(AttributeError, match="no_such_name"):
        imgrag.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_errors_keep_the_relations_callers_rely_on() -> None:
    assert issubclass(imgrag.StoreLocked, imgrag.StoreError)
    assert issubclass(imgrag.StoreError, imgrag.ConnectorError)
    assert issubclass(imgrag.ConnectorError, imgrag.ImgragError)
    assert issubclass(imgrag.FilterError, ValueError) and issubclass(imgrag.QueryError, ValueError)
    assert issubclass(imgrag.ExtraNotInstalled, ImportError)
    assert issubclass(imgrag.DaemonError, imgrag.QueryError)
    assert issubclass(imgrag.NotServable, LookupError)
    assert issubclass(imgrag.PruneRefused, imgrag.FatalError)
    # One module holds the tree: no other module defines an error class of its own.
    for module in ("imgrag.pipeline.ingest", "imgrag.pipeline.query", "imgrag.pipeline.daemon"):
        loaded = importlib.import_module(module)
        own = [
            n for n, v in vars(loaded).items()
            if isinstance(v, type) and issubclass(v, imgrag.ImgragError)
            and v.__module__ == module
        ]  # fmt: skip
        assert own == [], (module, own)


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
