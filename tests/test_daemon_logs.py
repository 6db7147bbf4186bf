"""``imgrag watch`` says what it does, read from its stderr as a pipe (a log file or a service
manager): one line per record in one format with ISO-8601 UTC times, a progress line while a
long first pass runs (made long by the emulator's latency, not by many files), a line per
file at ``-v``, and on Ctrl+C or SIGTERM how many files were left for the next start."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

from imgrag.connectors.emulator import EmulatorHandle

from tests import images_factory as f
from tests.conftest import wait_until
from tests.test_cli_ingest import cli_env, spawn_imgrag

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (debug|info|warning|error) \S")
PROGRESS = re.compile(r" info reconcile \S+: indexed (\d+)/(\d+), failed (\d+), rate [\d.]+/s")
LEFT = re.compile(r" info stopped: in-flight work flushed; (\d+) files left for the next start$")


class Stderr:
    """The lines a child writes to its stderr pipe, collected as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        stream = proc.stderr
        self._thread = threading.Thread(
            target=lambda: self.lines.extend(line.rstrip("\n") for line in stream), daemon=True
        )
        self._thread.start()

    def has(self, pattern: re.Pattern[str]) -> bool:
        return any(pattern.search(line) for line in list(self.lines))

    def join(self) -> list[str]:
        self._thread.join(timeout=30)
        return self.lines


def run_until_progress_then(sig: int, root: Path, env: dict[str, str], *args: str) -> list[str]:
    """Start the daemon, wait for a progress line of its first pass, send ``sig``; its lines."""
    with spawn_imgrag("watch", *args, str(root), env=env) as proc:  # closes the pipes
        err = Stderr(proc)
        try:
            wait_until(lambda: err.has(PROGRESS) or proc.poll() is not None, timeout=120,
                       what="a progress line")  # fmt: skip
            assert err.has(PROGRESS), "\n".join(err.lines)
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0, "\n".join(err.lines)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return err.join()


def test_the_daemon_log_format_progress_per_file_lines_and_exit_line(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    n = 40
    for i in range(n):
        f.save(f.photo(i, (32, 24)), root / ("a" if i % 2 else "b") / f"p{i}.png", "PNG")
    (root / "bad.png").write_text("not a png")
    env = cli_env(
        tmp_path,
        emulator,
        IMGRAG_API__PORT="0",
        IMGRAG_EMBEDDER__MAX_CONCURRENCY="1",
        IMGRAG_INGEST__PROGRESS_SECONDS="0.3",
    )
    emulator.state.options.latency_ms = 250  # 40 images one at a time: a pass of ~10 s

    first = run_until_progress_then(signal.SIGINT, root, env, "-v")  # Ctrl+C
    bad = [line for line in first if not LINE.match(line)]
    assert not bad, bad  # every line in the one format; no colour codes, no wrapped lines
    assert not any("\x1b" in line for line in first)
    assert any(
        re.search(r" info local API on (http://127\.0\.0\.1:\d+); gallery: \1/\?token=\S+$", line)
        for line in first
    )
    indexed = [line.split(" indexed ", 1)[1] for line in first if " info indexed " in line]
    assert indexed and set(indexed) <= {f"{'a' if i % 2 else 'b'}/p{i}.png" for i in range(n)}
    assert any(re.search(r" warning failed bad\.png: undecodable: ", line) for line in first)
    progress = [m for line in first if (m := PROGRESS.search(line))]
    assert all(int(m.group(2)) == n + 1 for m in progress)  # of the files the pass works on
    left = [int(m.group(1)) for line in first if (m := LEFT.search(line))]
    assert len(left) == 1 and 0 < left[0] < n, first[-5:]
    assert first[-1].endswith("files left for the next start")

    # SIGTERM (a service manager's stop) says the same; without -v no per-file lines.
    second = run_until_progress_then(signal.SIGTERM, root, env)
    assert all(LINE.match(line) for line in second), second
    assert not any(" info indexed " in line for line in second)
    later = [int(m.group(1)) for line in second if (m := LEFT.search(line))]
    assert len(later) == 1 and 0 < later[0] < left[0], second[-5:]


def test_a_stop_while_waiting_for_the_embedder_says_so_and_leaves_no_daemon_file(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    root = tmp_path / "inbox"
    f.save(f.photo(1), root / "p.png", "PNG")
    with socket.socket() as s:  # a port nothing listens on: the embedder is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/models"
    env = cli_env(tmp_path, emulator, IMGRAG_API__PORT="0", IMGRAG_EMBEDDER__ENDPOINT=down)
    waiting = re.compile(r" warning waiting for the embedder")
    for sig in (signal.SIGINT, signal.SIGTERM):
        with spawn_imgrag("watch", str(root), env=env) as proc:
            err = Stderr(proc)

            def seen(err: Stderr = err, proc: subprocess.Popen[str] = proc) -> bool:
                return err.has(waiting) or proc.poll() is not None

            wait_until(seen, timeout=120, what="the wait for the embedder")
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0, err.lines
            lines = err.join()
        assert lines[-1].endswith(
            " info stopped while starting: nothing indexed; every file is left for the next start"
        ), lines
        assert all(LINE.match(line) for line in lines), lines
        assert not (tmp_path / "state" / "daemon.json").exists()
