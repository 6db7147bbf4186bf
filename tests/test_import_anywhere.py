"""``from imgrag import Retriever`` works whatever the current folder holds.

The usual ``git clone`` leaves a folder named ``imgrag/`` (no ``__init__.py``) beside the
user's other work. Run Python next to it and that folder is a namespace-package portion of
``imgrag``: it wins over any package found only through an import hook (which is how the
default editable install finds ``imgrag``), and ``from imgrag import Retriever`` fails. The
installs ``make run`` and ``make test`` make put a real package on ``sys.path`` instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = "from imgrag import Retriever; import imgrag; print(imgrag.__file__)"


def _run_from(folder: Path) -> subprocess.CompletedProcess[str]:
    # This environment's install alone decides: no PYTHONPATH pointing at a checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_works_beside_a_clone_named_imgrag(tmp_path: Path) -> None:
    clone = tmp_path / "imgrag"
    (clone / "pipeline").mkdir(parents=True)
    (clone / "README.md").write_text("a clone of the repository\n")
    (clone / "pipeline" / "query.py").write_text("")
    run = _run_from(tmp_path)
    assert run.returncode == 0, run.stderr.strip().splitlines()[-1:]
    assert Path(run.stdout.strip()).name == "__init__.py"


def test_import_works_inside_the_clone_and_from_elsewhere(tmp_path: Path) -> None:
    """From the checkout itself (the suite's own folder) and from an unrelated one."""
    for folder in (Path(__file__).resolve().parent.parent, tmp_path):
        run = _run_from(folder)
        assert run.returncode == 0, (folder, run.stderr.strip().splitlines()[-1:])
