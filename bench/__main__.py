"""Run every benchmark script in this folder, each in its own process, and print their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(names: list[str]) -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    if names:
        scripts = [p for p in scripts if p.stem in names]
    results: dict[str, object] = {}
    failed = False
    for script in scripts:
        print(f"running {script.stem} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{script.stem}"],
            capture_output=True,
            text=True,
            cwd=HERE.parent,
        )
        if proc.returncode != 0:
            failed = True
            results[script.stem] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        try:
            results[script.stem] = json.loads(proc.stdout)
        except ValueError:
            failed = True
            results[script.stem] = {"error": "did not print JSON"}
    print(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
