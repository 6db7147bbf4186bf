"""Start ``imgrag emulator`` in its own process, so client and server do not share a GIL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from imgrag.connectors.embedder import ImageInput
from PIL import Image

_SCRIPT = """
import os, sys
from pydantic import SecretStr
from imgrag.connectors.emulator import EmulatorOptions, serve
options = EmulatorOptions.model_validate_json(sys.argv[1])
if os.environ.get("BENCH_EMULATOR_KEY"):
    options.api_key = SecretStr(os.environ["BENCH_EMULATOR_KEY"])
serve(options, lambda url, state: print(url, flush=True))
"""


@dataclass(frozen=True)
class EmulatorProcess:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the emulator process has used so far (user + system)."""
        import psutil

        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)


@contextmanager
def emulator_process(timeout: float = 60.0, **options: object) -> Iterator[EmulatorProcess]:
    """Run an emulator subprocess with these EmulatorOptions; yields its URL and pid."""
    from imgrag.connectors.emulator import EmulatorOptions

    opts = EmulatorOptions.model_validate({"host": "127.0.0.1", "port": 0, **options})
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, opts.model_dump_json()],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_EMULATOR_KEY": str(options.get("api_key") or "")},
    )
    assert proc.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    try:
        if not line or not line[0].startswith("http"):
            raise RuntimeError(f"emulator did not start within {timeout}s")
        yield EmulatorProcess(line[0].strip(), proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def distinct_images(n: int) -> list[ImageInput]:
    """``n`` small PNGs of different colours, ready for an embedder."""
    out = []
    for i in range(n):
        img = Image.new("RGB", (256, 192), ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(ImageInput(buf.getvalue()))
    return out
