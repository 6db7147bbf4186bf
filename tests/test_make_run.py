"""``make run`` on a terminal: Ctrl+C stops the daemon cleanly and make reports no error.
The terminal is a real pseudo-terminal, so Ctrl+C is the tty's SIGINT to its foreground job."""

from __future__ import annotations

import os
import pty
import select
import shutil
import time
from pathlib import Path

import pytest

from tests.test_cli_ingest import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_ctrl_c_stops_make_run_without_a_make_error(tmp_path: Path) -> None:
    if not (REPO / ".venv" / ".installed-run").is_file():
        pytest.skip("make run's environment is not installed (.venv/.installed-run)")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IMGRAG_", "MAKE"))},
        "IMGRAG_STATE_DIR": str(tmp_path / "state"),
        "IMGRAG_EMBEDDER__PROVIDER": "local",
        "IMGRAG_API__PORT": "0",
    }
    # -o: never reinstall nor relink here, whatever the stamps' age.
    argv = ["make", "-o", ".venv/.installed-run", "-o", ".venv/.installed-links", "run"]
    argv.append(f"INBOX={tmp_path / 'inbox'}")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(REPO)
        os.execvpe("make", argv, env)
    out = b""
    sent = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closed: everything exited
                break
            if not chunk:
                break
            out += chunk
        if not sent and b"Ctrl+C stops" in out:
            os.write(fd, b"\x03")
            sent = True
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert sent, text
    assert "stopped:" in text, text
    assert "make: ***" not in text and "Interrupt" not in text, text
    assert os.waitstatus_to_exitcode(status) == 0, text
