"""Start-up time: ``import imgrag``, ``imgrag --help`` and ``imgrag status`` (no daemon, an
empty state folder, the packaged offline defaults), each in a fresh interpreter, against
``python -c pass`` timed in the same run. Prints JSON.

``python -m bench.startup [REPEATS]`` (default 15). Runs are interleaved (one of each command,
then the next round) so a slow moment of the machine hits every command alike; each figure is
the median. A last run of each command with ``-X importtime`` lists the heavy modules it loads.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What a light start must not load: the array, image, store, model and web stacks.
HEAVY = (
    "numpy",
    "PIL",
    "qdrant_client",
    "qdrant_edge",
    "onnxruntime",
    "starlette",
    "uvicorn",
    "httpx",
)
REPEATS = 15


def imgrag_argv() -> list[str]:
    """How to start the ``imgrag`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "imgrag"
    if script.is_file():
        return [str(script)]
    # No script beside the interpreter (an uninstalled checkout): the same entry point.
    return [
        sys.executable,
        "-c",
        "import sys; from imgrag.pipeline.cli import run; sys.exit(run())",
    ]


def clean_env(state_dir: Path) -> dict[str, str]:
    """No daemon, no user config, no IMGRAG_* override: the packaged offline defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGRAG_")}
    env.update(
        IMGRAG_STATE_DIR=str(state_dir / "state"),
        XDG_CONFIG_HOME=str(state_dir / "config"),
        XDG_DATA_HOME=str(state_dir / "data"),
    )
    return env


def commands() -> dict[str, list[str]]:
    imgrag = imgrag_argv()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import imgrag": [sys.executable, "-c", "import imgrag"],
        "imgrag --help": [*imgrag, "--help"],
        "imgrag status": [*imgrag, "status"],
    }


def imported_modules(argv: list[str], env: dict[str, str]) -> list[str]:
    """Every module the command imports, by name, read from ``-X importtime``'s report (set
    through the environment so it reaches a console script's interpreter too)."""
    run = subprocess.run(
        argv,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        check=False,
    )
    names = []
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.append(name)
    return names


def heavy_in(modules: list[str]) -> list[str]:
    """The heavy top-level packages among ``modules``."""
    return sorted({m.split(".", 1)[0] for m in modules} & set(HEAVY))


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start


def measure(repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="imgrag-startup-") as tmp:
        env = clean_env(Path(tmp))
        cmds = commands()
        for argv in cmds.values():  # warm the page cache and the bytecode once
            timed(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(repeats):
            for name, argv in cmds.items():
                samples[name].append(timed(argv, env))
        loaded = {name: imported_modules(argv, env) for name, argv in cmds.items()}
    base = statistics.median(samples["python -c pass"])
    results: dict[str, object] = {}
    for name, times in samples.items():
        median = statistics.median(times)
        results[name] = {
            "median_ms": round(median * 1000, 1),
            "ratio_to_python": round(median / base, 2),
            "modules_imported": len(loaded[name]),
            "heavy_modules": heavy_in(loaded[name]),
        }
    return {
        "repeats": repeats,
        "python": platform.python_version(),
        "imgrag": imgrag_argv()[0],
        "commands": results,
    }


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS
    print(json.dumps(measure(repeats), indent=2))


if __name__ == "__main__":
    main()
