"""The CLI in process (typer's CliRunner): status, search and their one-line errors."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.cli import app
from imgrag.pipeline.daemon_client import DaemonInfo, write_daemon_file
from typer.testing import CliRunner, Result

from tests import images_factory as f
from tests.test_cli_ingest import cli_settings


@pytest.fixture
def env(tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings for the shared emulator and a fresh state directory; returns the folder."""
    for name in [n for n in os.environ if n.startswith("IMGRAG_")]:
        monkeypatch.delenv(name)
    values = cli_settings(tmp_path, emulator)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "inbox"
    for i in range(4):
        f.save(f.photo(i, (48, 32)), root / f"d{i % 2}" / f"img{i}.png", "PNG")
    return root


def imgrag(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


@pytest.fixture
def indexed(env: Path) -> Iterator[Path]:
    result = imgrag("ingest", str(env), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["indexed"] == 4
    yield env


def test_ingest_json_strict_and_failures(env: Path) -> None:
    (env / "broken.jpg").write_text("no image here")
    result = imgrag("ingest", str(env), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("indexed", "unchanged", "reused", "removed", "failed")} == {
        "indexed": 4, "unchanged": 0, "reused": 0, "removed": 0, "failed": 1,
    }  # fmt: skip
    assert summary["requests"] == 4 and summary["tokens"] == 4000
    strict = imgrag("ingest", str(env), "--strict")
    assert strict.exit_code == 2 and "1 failed (1 undecodable)" in strict.stdout
    status = json.loads(imgrag("status", str(env), "--json").stdout)
    assert status["failures"][0]["path"] == "broken.jpg"
    assert status["failures"][0]["reason"] == "undecodable"


def test_bad_config_and_wrong_key_are_one_clear_line(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[embedder]\nmax_concurrency = 'lots'\n")
    message = one_line_error(imgrag("--config", str(bad), "ingest", str(env)))
    assert str(bad) in message and "[embedder] max_concurrency" in message
    monkeypatch.setenv("AZURE_INFERENCE_CREDENTIAL", "wrong-key-xyz")
    message = one_line_error(imgrag("ingest", str(env)))
    assert "401" in message and "AZURE_INFERENCE_CREDENTIAL" in message
    assert "wrong-key-xyz" not in message


def test_offline_status_never_calls_the_embedder(indexed: Path, emulator: EmulatorHandle) -> None:
    """A remote embedder bills every request: reading counts from disk must send none."""
    (indexed / "broken.png").write_text("not an image")
    f.save(f.photo(9, (48, 32)), indexed / "new.png", "PNG")
    emulator.state.reset()
    result = imgrag("status", str(indexed), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert emulator.state.requests == []
    assert (report["indexed"], report["pending"], report["failed"]) == (4, 2, 0)
    assert report["embedder"]["model"] == "Cohere-embed-v3-english"
    assert report["embedder"]["dimension"] == 1024

    assert imgrag("ingest", str(indexed)).exit_code == 0
    emulator.state.reset()
    report = json.loads(imgrag("status", str(indexed), "--json").stdout)
    # The broken file failed for good and has not changed: failed, not pending.
    assert (report["indexed"], report["pending"], report["failed"]) == (5, 0, 1)
    assert emulator.state.requests == []
    text = imgrag("status", str(indexed))
    assert "5 indexed, 0 pending, 1 failed (no daemon running)" in text.stdout


def test_pending_counts_each_file_once_and_never_exceeds_the_folder(env: Path) -> None:
    report = json.loads(imgrag("status", str(env), "--json").stdout)
    assert (report["indexed"], report["pending"]) == (0, 4)
    (env / "d0" / "img0.txt").write_text("a caption")  # a sidecar: still one file
    report = json.loads(imgrag("status", str(env), "--json").stdout)
    assert report["pending"] == 4


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_stale_daemon_file_is_no_daemon(indexed: Path, tmp_path: Path) -> None:
    """daemon.json naming a live pid that does not answer (the pid was reused, or the
    daemon hangs) must not turn status or search into a traceback."""
    info = DaemonInfo(
        pid=os.getpid(), host="127.0.0.1", port=_dead_port(), root=str(indexed),
        started_at=time.time(),
    )  # fmt: skip
    write_daemon_file(tmp_path / "state" / "daemon.json", info)
    status = imgrag("status", str(indexed))
    assert status.exit_code == 0, status.output
    assert "4 indexed, 0 pending, 0 failed (no daemon running)" in status.stdout
    found = imgrag("search", "--similar-to", "d0/img0.png", "--json")
    assert found.exit_code == 0, found.output
    paths = {h["path"] for h in json.loads(found.stdout)}
    assert paths == {"d0/img2.png", "d1/img1.png", "d1/img3.png"}


def test_search_modes_and_options(indexed: Path) -> None:
    query = indexed / "d1" / "img1.png"
    hits = json.loads(imgrag("search", "--image", str(query), "--json", "-n", "2").stdout)
    assert hits[0]["path"] == "d1/img1.png" and len(hits) == 2
    like = json.loads(imgrag("search", "--similar-to", "d1/img1.png", "--json").stdout)
    assert "d1/img1.png" not in {h["path"] for h in like} and len(like) == 3
    folder = imgrag("search", "--image", str(query), "--filter", "folder=d0", "--json")
    assert {h["payload"]["folder"] for h in json.loads(folder.stdout)} == {"d0"}
    strict = imgrag("search", "--image", str(query), "--min-score", "0.999", "--json")
    assert [h["path"] for h in json.loads(strict.stdout)] == ["d1/img1.png"]
    table = imgrag("search", "--image", str(query), "-n", "1")
    assert "rank" in table.stdout and "d1/img1.png" in table.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "give TEXT, --image PATH, both, or --similar-to PATH"),
        (("--image", "nope.png"), "--image nope.png: no such file"),
        (("--similar-to", "d0/nope.png"), "d0/nope.png is not in the index"),
        (("cats", "--filter", "folder"), "write key=value"),
        (("cats", "--similar-to", "d0/img0.png"), "similar_to searches by an indexed image"),
    ],
)
def test_search_errors_are_one_line(indexed: Path, args: tuple[str, ...], expected: str) -> None:
    assert expected in one_line_error(imgrag("search", *args))
