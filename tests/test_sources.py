"""Many folders, one index: sources keep each folder's points, ids, deletions and failures
apart, and an index written before sources is adopted without re-embedding."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from imgrag.connectors.config import StoreConfig
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.index import Point
from imgrag.connectors.stores import QdrantIndex
from imgrag.pipeline.config import Settings
from imgrag.pipeline.core import Core
from imgrag.pipeline.door import LocalDoor
from imgrag.pipeline.ingest import Summary
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.keys import point_id
from imgrag.pipeline.query import SearchQuery
from imgrag.pipeline.retrieval import SearchService
from imgrag.pipeline.runtime import open_runtime

from tests import images_factory as f
from tests.ingest_harness import reconcile_into_qdrant, settings_for


def images(root: Path, names: list[str], seed: int = 0) -> None:
    for i, name in enumerate(names):
        f.save(f.photo(seed + i, (40, 32)), root / name, "PNG")


async def ingest(settings: Settings, folder: Path, name: str | None = None) -> Summary:
    """One ``imgrag ingest`` pass, as the CLI runs it."""
    async with open_runtime(settings) as runtime:
        ingestor = runtime.ingestor(Core.build(settings).registry.resolve(folder, name))
        try:
            return await ingestor.reconcile()
        finally:
            await ingestor.close()


async def payloads(settings: Settings) -> list[dict[str, object]]:
    async with open_runtime(settings) as runtime:
        index = runtime.index
        return [index.payload_by_id(s.id) or {} for s in index.file_states()]


def test_two_folders_one_state_dir_both_kept_and_reruns_are_free(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    settings = settings_for(tmp_path, emulator)
    a, b = tmp_path / "inbox", tmp_path / "other-folder"
    images(a, ["x.png", "d/y.png", "d/z.png"])
    images(b, ["p.png", "q.png"], seed=10)
    first = asyncio.run(ingest(settings, a))
    second = asyncio.run(ingest(settings, b))
    assert (first.indexed, second.indexed, second.removed) == (3, 2, 0)
    stored = asyncio.run(payloads(settings))
    by_source = {str(p["source"]) for p in stored}
    assert len(stored) == 5 and len(by_source) == 2
    assert {(p["root"], p["path"]) for p in stored} == {
        (str(a), "x.png"), (str(a), "d/y.png"), (str(a), "d/z.png"),
        (str(b), "p.png"), (str(b), "q.png"),
    }  # fmt: skip
    for folder in (a, b, a):
        emulator.state.reset()
        again = asyncio.run(ingest(settings, folder))
        assert (again.removed, again.indexed, again.requests) == (0, 0, 0), folder

    async def search() -> dict[str, set[str]]:
        async with open_runtime(settings) as runtime:
            service = SearchService(
                runtime.embedder,
                runtime.index,
                source="test",
                sources=LocalDoor(Core.build(settings)).sources,
            )
            out: dict[str, set[str]] = {}
            for name, _root in LocalDoor(Core.build(settings)).sources():
                hits = await service.run(SearchQuery(text="a photo", limit=10, source=name))
                out[name] = {h.abs_path for h in hits}
                assert {h.source for h in hits} == {name}
            return out

    found = asyncio.run(search())
    assert sorted(map(sorted, found.values())) == sorted(
        [sorted(str(a / p) for p in ("x.png", "d/y.png", "d/z.png")),
         sorted(str(b / p) for p in ("p.png", "q.png"))]
    )  # fmt: skip


def test_subfolder_of_a_source_is_that_source(tmp_path: Path, emulator: EmulatorHandle) -> None:
    settings = settings_for(tmp_path, emulator)
    nest = tmp_path / "nest"
    images(nest, ["2024/a.png", "2024/b.png", "2025/c.png"])
    asyncio.run(ingest(settings, nest))
    images(nest, ["2025/d.png"], seed=20)
    (nest / "2025" / "c.png").unlink()
    sub = asyncio.run(ingest(settings, nest / "2025"))
    assert (sub.indexed, sub.removed) == (1, 1)  # only what changed below 2025
    stored = asyncio.run(payloads(settings))
    assert sorted(str(p["path"]) for p in stored) == ["2024/a.png", "2024/b.png", "2025/d.png"]
    assert {p["root"] for p in stored} == {str(nest)}
    assert len(Core.build(settings).registry.entries()) == 1


def test_same_relative_path_in_two_sources(tmp_path: Path, emulator: EmulatorHandle) -> None:
    settings = settings_for(tmp_path, emulator)
    a, b = tmp_path / "a", tmp_path / "b"
    images(a, ["same.png"])
    images(b, ["same.png"], seed=7)
    asyncio.run(ingest(settings, a, "alpha"))
    asyncio.run(ingest(settings, b, "beta"))
    stored = asyncio.run(payloads(settings))
    assert sorted((p["source"], p["path"]) for p in stored) == [
        ("alpha", "same.png"),
        ("beta", "same.png"),
    ]
    assert len({p["sha256"] for p in stored}) == 2  # neither overwrote the other


def test_a_folder_holding_a_source_or_a_taken_name_is_refused(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    from imgrag import SourceError

    settings = settings_for(tmp_path, emulator)
    (tmp_path / "top" / "inner").mkdir(parents=True)
    Core.build(settings).registry.resolve(tmp_path / "top" / "inner", "inner")
    with pytest.raises(SourceError, match="holds source 'inner'"):
        Core.build(settings).registry.resolve(tmp_path / "top")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(SourceError, match="forget inner"):
        Core.build(settings).registry.resolve(tmp_path / "elsewhere", "inner")


def test_two_machines_feed_one_qdrant_local_collection(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """Two state directories (two machines) with their own sources write one collection
    (qdrant-client local mode stands in for the server): neither removes the other's."""
    location = tmp_path / "qdrant"

    async def machine(name: str, folder: Path) -> Summary:
        settings = settings_for(tmp_path / name, emulator)
        settings.store = StoreConfig(kind="qdrant", collection="shared")
        return await reconcile_into_qdrant(settings, folder, location)

    one, two = tmp_path / "photos", tmp_path / "scans"
    images(one, ["a.png", "b.png"])
    images(two, ["a.png", "c.png", "d.png"], seed=5)
    assert asyncio.run(machine("m1", one)).indexed == 2
    assert asyncio.run(machine("m2", two)).indexed == 3
    again = asyncio.run(machine("m1", one))
    assert (again.removed, again.requests) == (0, 0)
    index = QdrantIndex(StoreConfig(kind="qdrant", collection="shared"), location=location)
    try:
        spec = index.recorded_spec("shared")
        assert spec is not None
        index.ensure_collection(spec)
        assert sorted(s.path for s in index.file_states()) == [
            "a.png",
            "a.png",
            "b.png",
            "c.png",
            "d.png",
        ]
    finally:
        index.close()


def _make_legacy(settings: Settings) -> int:
    """Rewrite the index as today's main wrote it: ids uuid5(collection, path), payloads
    without ``source``; and no sources registry."""

    async def rewrite() -> int:
        async with open_runtime(settings) as runtime:
            index = runtime.index
            states = list(index.file_states())
            for s in states:
                payload = index.payload_by_id(s.id) or {}
                vector = index.vector_by_id(s.id) or []
                payload.pop("source", None)
                index.delete_ids([s.id])
                legacy = point_id(settings.store.collection, s.path)
                index.upsert([Point(id=legacy, vector=vector, payload=payload)])
            return len(states)

    n = asyncio.run(rewrite())
    (settings.state_dir / "sources.json").unlink()
    return n


def test_index_from_before_sources_is_adopted_with_no_requests(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    settings = settings_for(tmp_path, emulator)
    inbox = tmp_path / "inbox"
    images(inbox, ["a.png", "b/c.png", "b/d.png"])
    asyncio.run(ingest(settings, inbox))
    assert _make_legacy(settings) == 3
    emulator.state.reset()
    summary = asyncio.run(ingest(settings, inbox))
    assert (summary.indexed, summary.removed, summary.requests) == (0, 0, 0)
    name = Core.build(settings).registry.entries()[0].name
    stored = asyncio.run(payloads(settings))
    assert len(stored) == 3 and {p["source"] for p in stored} == {name}

    async def ids() -> set[str]:
        async with open_runtime(settings) as runtime:
            return {s.id for s in runtime.index.file_states()}

    assert asyncio.run(ids()) == {point_id(name, p) for p in ("a.png", "b/c.png", "b/d.png")}


def test_index_from_before_sources_with_another_root_is_never_emptied(
    tmp_path: Path, emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, emulator)
    old = tmp_path / "old-root"
    images(old, ["a.png", "b.png"])
    asyncio.run(ingest(settings, old))
    _make_legacy(settings)
    moved = tmp_path / "moved"
    old.rename(moved)
    with caplog.at_level("WARNING", logger="imgrag.ingest"):
        summary = asyncio.run(ingest(settings, moved))
    assert (summary.removed, summary.requests) == (0, 0)  # vectors reused by content
    stored = asyncio.run(payloads(settings))
    assert sum(1 for p in stored if "source" not in p) == 2  # left alone, not emptied
    lines = [r.getMessage() for r in caplog.records if "before sources" in r.getMessage()]
    assert len(lines) == 1 and str(old) in lines[0] and "imgrag forget" in lines[0]


def test_journal_from_before_sources_migrates(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE failures (path TEXT PRIMARY KEY, signature TEXT NOT NULL, kind TEXT NOT "
        "NULL, reason TEXT NOT NULL, message TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT "
        "1, first_at REAL NOT NULL, last_at REAL NOT NULL)"
    )
    db.execute(
        "INSERT INTO failures VALUES ('x.png', 's', 'permanent', 'undecodable', 'm', 1, 0, 0)"
    )
    db.commit()
    db.close()
    journal = Journal(path)
    try:
        assert journal.count() == 1
        mine, other = journal.scoped("mine"), journal.scoped("other")
        assert journal.adopt("mine") == 1
        assert mine.permanent_failures() == {"x.png": ("s", "undecodable")}
        other.record("x.png", "t", "permanent", "too_large", "big")
        assert (mine.count(), other.count(), journal.count()) == (1, 1, 2)
        other.clear(["x.png"])
        assert (mine.count(), other.count()) == (1, 0)
    finally:
        journal.close()


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's environment with no state directory named: the per-user default applies."""
    for name in [n for n in os.environ if n.startswith("IMGRAG_")]:
        monkeypatch.delenv(name)
    values = {
        "IMGRAG_EMBEDDER__PROVIDER": "foundry",
        "IMGRAG_EMBEDDER__ENDPOINT": emulator.url,
        "IMGRAG_EMBEDDER__MAX_ATTEMPTS": "2",
        "IMGRAG_INGEST__SETTLE_SECONDS": "0",
        "IMGRAG_STORE__COLLECTION": "cli",
        "AZURE_INFERENCE_CREDENTIAL": "emulator-test-key-0f9e",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def run_cli(*args: str) -> tuple[int, str]:
    from imgrag.pipeline.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout + result.stderr


def test_search_and_status_from_another_folder(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, elsewhere = cli_env / "inbox", cli_env / "elsewhere"
    images(inbox, ["a.png", "b.png", "c.png"])
    elsewhere.mkdir()
    monkeypatch.chdir(cli_env)
    code, out = run_cli("ingest", "inbox", "--json")
    assert code == 0, out
    monkeypatch.chdir(elsewhere)
    code, out = run_cli("status", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["indexed"] == 3 and report["sources"][0]["root"] == str(inbox)
    code, out = run_cli("search", "a photo", "--json")
    assert code == 0, out
    assert {h["abs_path"] for h in json.loads(out)} == {str(inbox / f"{n}.png") for n in "abc"}
    from imgrag import Retriever

    with Retriever.from_config() as retriever:
        hits = retriever.search("a photo", limit=5)
    assert sorted(h.abs_path for h in hits) == sorted(str(inbox / f"{n}.png") for n in "abc")
    assert not (cli_env / ".imgrag").exists() and not (elsewhere / ".imgrag").exists()


def test_state_dir_option_and_user_config_file(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgrag.pipeline.config import load_settings, user_config_file

    images(cli_env / "inbox", ["a.png"])
    code, out = run_cli("--state-dir", str(cli_env / "custom"), "ingest", str(cli_env / "inbox"))
    assert code == 0, out
    assert (cli_env / "custom" / "sources.json").is_file()
    user = user_config_file()
    user.parent.mkdir(parents=True)
    user.write_text('[store]\ncollection = "from-user-file"\n')
    monkeypatch.delenv("IMGRAG_STORE__COLLECTION")
    assert load_settings().store.collection == "from-user-file"
    monkeypatch.setenv("IMGRAG_CONFIG", str(cli_env / "nope.toml"))
    with pytest.raises(Exception, match=r"nope\.toml"):
        load_settings()


def test_forget_removes_one_source(cli_env: Path) -> None:
    a, b = cli_env / "a", cli_env / "b"
    images(a, ["x.png", "y.png"])
    images(b, ["z.png"], seed=3)
    for folder, name in ((a, "alpha"), (b, "beta")):
        code, out = run_cli("ingest", str(folder), "--source", name)
        assert code == 0, out
    (a / "x.png").write_text("now broken")
    code, out = run_cli("ingest", str(a))
    assert code == 0, out
    code, out = run_cli("forget", "alpha")
    assert code == 0 and "forgot alpha: 1 points removed" in out, out
    code, out = run_cli("sources", "--json")
    assert [s["name"] for s in json.loads(out)] == ["beta"]
    code, out = run_cli("status", "--json")
    report = json.loads(out)
    assert report["indexed"] == 1 and report["failed"] == 0
    code, out = run_cli("status", "beta", "--json")
    assert json.loads(out)["sources"][0]["indexed"] == 1
    code, out = run_cli("forget", "alpha")
    assert code == 1 and "no such source" in out


def test_a_daemon_that_is_starting_is_waited_for_then_named(tmp_path: Path) -> None:
    """daemon.json with port 0 (the store is owned, the API not up yet): a client says the
    daemon is starting, waits, and then fails with one line rather than a lock error."""
    from imgrag import DaemonError
    from imgrag.pipeline.daemon_client import (
        DaemonClient,
        DaemonInfo,
        read_daemon_file,
        write_daemon_file,
    )

    state = tmp_path / "daemon.json"
    me = DaemonInfo(pid=os.getpid(), host="127.0.0.1", port=0, root="/r", started_at=0.0)
    write_daemon_file(state, me)
    assert read_daemon_file(state) is None  # not an API to call yet
    heard: list[str] = []
    with pytest.raises(DaemonError, match="still starting"):
        asyncio.run(DaemonClient.discover(state, wait=0.3, on_wait=heard.append))
    assert len(heard) == 1 and "is starting" in heard[0]


def test_retry_clears_only_its_own_source_failures(cli_env: Path) -> None:
    a, b = cli_env / "a", cli_env / "b"
    for folder in (a, b):
        images(folder, ["ok.png"])
        (folder / "broken.png").write_text("not a png")
        code, out = run_cli("ingest", str(folder))
        assert code == 0, out
    code, out = run_cli("retry", str(a))
    assert code == 0 and "retrying 1 failed files" in out, out
    code, out = run_cli("status", str(b), "--json")
    assert json.loads(out)["sources"][0]["failed"] == 1  # b's record is kept
