"""One index, one door: every way in (the CLI, ``Retriever``, the daemon's API and gallery)
sees the same sources, and a search costs exactly its own request.

Each test here reproduces a symptom from the issue that made the door; each failed before it:
- a folder ingested without a daemon, then a daemon started on another folder: status and
  sources missed the first folder, the gallery refused its thumbnails, forget refused;
- ``imgrag search`` sent 2 embeddings requests (a probe, then the query); three
  ``Retriever`` opens with one search each sent 6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from imgrag import FilterError, Retriever
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.pipeline.cli import app
from imgrag.pipeline.daemon_client import read_daemon_file
from typer.testing import CliRunner, Result

from tests import images_factory as f
from tests.test_cli_ingest import AUTH, cli_settings

REPO = Path(__file__).resolve().parent.parent


def imgrag(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def fill(folder: Path, count: int, seed: int) -> Path:
    for i in range(count):
        f.save(f.photo(seed + i, (48, 32)), folder / f"img{i}.png", "PNG")
    return folder


@pytest.fixture
def env(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The shared emulator, a fresh state directory, and no other IMGRAG_ settings."""
    for name in [n for n in os.environ if n.startswith("IMGRAG_")]:
        monkeypatch.delenv(name)
    values = cli_settings(tmp_path, emulator)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}


def embeddings_requests(emulator: EmulatorHandle) -> int:
    return sum(1 for r in emulator.state.requests if r.route in ("images", "texts"))


# -- a search is one request ---------------------------------------------------------------------


def test_a_cli_search_sends_exactly_one_embeddings_request(
    env: dict[str, str], tmp_path: Path, emulator: EmulatorHandle
) -> None:
    folder = fill(tmp_path / "photos", 3, 1)
    assert imgrag("ingest", str(folder)).exit_code == 0
    emulator.state.reset()
    result = imgrag("search", "a photo", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3
    assert embeddings_requests(emulator) == 1  # the query's own; no probe
    assert not [r for r in emulator.state.requests if r.route == "info"]
    emulator.state.reset()
    similar = imgrag("search", "--similar-to", "img0.png", "--json")
    assert similar.exit_code == 0, similar.output
    assert embeddings_requests(emulator) == 0  # a stored vector: nothing to embed


def test_three_retriever_opens_with_one_search_each_send_three(
    env: dict[str, str], tmp_path: Path, emulator: EmulatorHandle
) -> None:
    folder = fill(tmp_path / "photos", 3, 1)
    assert imgrag("ingest", str(folder)).exit_code == 0
    emulator.state.reset()
    for question in ("a photo", "a red square", "something blue"):
        with Retriever.from_config() as retriever:
            assert retriever.mode == "direct"
            assert len(retriever.search(question, limit=2)) == 2
    assert embeddings_requests(emulator) == 3
    with Retriever.from_config() as retriever, pytest.raises(FilterError, match="taken_after"):
        retriever.search("a photo", filter={"taken_after": "yesterday"})


def test_searching_an_index_never_made_sends_nothing(
    env: dict[str, str], emulator: EmulatorHandle
) -> None:
    result = imgrag("search", "a photo", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert emulator.state.requests == []


def test_a_search_with_another_model_than_the_collections_is_one_line(
    env: dict[str, str], tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trusting the record must not mean trusting a changed config: the model is checked
    against the record, still without a request."""
    assert imgrag("ingest", str(fill(tmp_path / "photos", 2, 1))).exit_code == 0
    monkeypatch.setenv("IMGRAG_EMBEDDER__MODEL", "embed-v-4-0")
    emulator.state.reset()
    result = imgrag("search", "a photo")
    assert result.exit_code == 1 and "was built for" in result.stderr, result.output
    assert embeddings_requests(emulator) == 0


# -- every door sees every source ------------------------------------------------------------------


@pytest.fixture
def daemon(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A real daemon process watching ``second``, started after ``first`` was ingested
    without one (the README's `make run`, then `make run INBOX=other`)."""
    first, second = tmp_path / "first", tmp_path / "second"
    fill(first, 5, 10)
    fill(second, 2, 30)
    assert imgrag("ingest", str(first)).exit_code == 0
    env = {**env, "IMGRAG_API__PORT": "0"}
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgrag.pipeline.cli", "watch", str(second)],
        env=env,
        cwd=tmp_path,  # where "first" is a folder; the commands below run elsewhere
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    daemon_file = Path(env["IMGRAG_STATE_DIR"]) / "daemon.json"
    deadline = time.monotonic() + 60
    while read_daemon_file(daemon_file) is None:
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        assert time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.05)
    try:
        yield tmp_path, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def sources_of(report: dict[str, object]) -> dict[str, int]:
    return {s["root"]: s["indexed"] for s in report["sources"]}  # type: ignore[attr-defined,index]


def test_every_door_agrees_on_three_folders_with_the_daemon_running(
    daemon: tuple[Path, dict[str, str]],
) -> None:
    base, env = daemon
    first, second, third = base / "first", base / "second", base / "third"
    fill(third, 3, 50)
    handed = imgrag("ingest", str(third), "--json")  # handed to a daemon not watching it
    assert handed.exit_code == 0 and "owns the index" in handed.stderr, handed.output
    assert json.loads(handed.stdout)["indexed"] == 3

    def settled() -> dict[str, object]:
        deadline = time.monotonic() + 60
        while True:
            report = json.loads(imgrag("status", "--json").stdout)
            if report["indexed"] == 10 and report["pending"] == 0:
                return report  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, report
            time.sleep(0.1)

    report = settled()
    assert sources_of(report) == {str(first): 5, str(second): 2, str(third): 3}
    watched = {s["root"]: s["watched"] for s in report["sources"]}  # type: ignore[index]
    assert watched == {str(first): False, str(second): True, str(third): False}
    listed = json.loads(imgrag("sources", "--json").stdout)
    assert {s["root"] for s in listed} == {str(first), str(second), str(third)}
    hits = json.loads(imgrag("search", "a photo", "--limit", "20", "--json").stdout)
    assert len(hits) == 10
    assert {Path(h["abs_path"]).parent for h in hits} == {first, second, third}
    with Retriever.from_config() as retriever:  # the same error class through either door
        assert retriever.mode == "daemon"
        with pytest.raises(FilterError, match="taken_after"):
            retriever.search("a photo", filter={"taken_after": "yesterday"})
    one = json.loads(imgrag("status", str(first), "--json").stdout)
    assert sources_of(one) == {str(first): 5} and one["indexed"] == 5

    # The gallery serves every source's thumbnails and originals, watched or not.
    info = read_daemon_file(Path(env["IMGRAG_STATE_DIR"]) / "daemon.json")
    assert info is not None
    elsewhere = imgrag("serve", "--port", "0")  # the daemon's index: its gallery, not a second
    assert elsewhere.exit_code == 1 and f"open {info.url}/ instead" in elsewhere.stderr
    web = httpx.Client(base_url=info.url, headers=AUTH, timeout=30)
    for hit in hits:
        assert web.get(f"/thumb/{hit['id']}").status_code == 200, hit["abs_path"]
        assert web.get(f"/image/{hit['id']}").status_code == 200, hit["abs_path"]

    # A relative name is the caller's, never the daemon's working folder: here there is no
    # ./first, and the daemon (started beside it) must not take it for its own.
    assert not Path("first").exists()
    wrong = imgrag("forget", "first")
    assert wrong.exit_code == 1 and "no such source" in wrong.stderr, wrong.output
    assert json.loads(imgrag("status", "--json").stdout)["indexed"] == 10

    # Forget goes through the daemon too, watched source or not.
    gone = imgrag("forget", str(first), "--json")
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.stdout)["removed"] == 5
    stopped = imgrag("forget", str(second), "--json")
    assert stopped.exit_code == 0 and json.loads(stopped.stdout)["removed"] == 2
    after = json.loads(imgrag("status", "--json").stdout)
    assert sources_of(after) == {str(third): 3} and after["indexed"] == 3
    left = json.loads(imgrag("search", "a photo", "--limit", "20", "--json").stdout)
    assert {Path(h["abs_path"]).parent for h in left} == {third}
    # Forgotten means no longer watched, and no longer served.
    assert web.get("/health").json()["sources"] == []
    of_first = next(h for h in hits if Path(h["abs_path"]).parent == first)
    assert web.get(f"/thumb/{of_first['id']}").status_code == 404
    web.close()


def test_doctor_asks_the_embedder_once_and_checks_the_record(
    env: dict[str, str], tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe runs on demand: ``imgrag doctor`` spends it, and says when the deployment
    no longer serves what the index was made with."""
    assert imgrag("ingest", str(fill(tmp_path / "photos", 2, 1))).exit_code == 0
    emulator.state.reset()
    result = imgrag("doctor", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["ok"] and found["collection"]["model"] == found["embedder"]["model"]
    assert found["answered_by"] == "no daemon running"
    assert embeddings_requests(emulator) == 1  # the probe's one image
    monkeypatch.setenv("IMGRAG_EMBEDDER__DIMENSIONS", "512")  # v3 serves 1024 only
    changed = imgrag("doctor")
    assert changed.exit_code == 1, changed.output
    assert "dimensions" in changed.stderr and changed.stderr.strip().count("\n") == 0
