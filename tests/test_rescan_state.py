"""Rescans keep the index's file state in memory: read once, packed, kept current."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.index import CollectionSpec, FileState, Point
from imgrag.connectors.stores.edge import EdgeIndex
from imgrag.connectors.tiny import TinyEmbedder
from imgrag.pipeline import candidates, source_folder
from imgrag.pipeline.candidates import Rules, walk_rows
from imgrag.pipeline.ingest import Indexer
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.known import KnownFiles

from tests import images_factory as f
from tests.ingest_harness import pipeline


def _state(n: int, **changes: Any) -> FileState:
    rel = f"folder{n % 50}/img_{n:06d}.jpg"
    values: dict[str, Any] = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, rel)),
        "path": rel,
        "size": 1_000 + n,
        "mtime_ns": 1_700_000_000_000_000_000 + n,
        "sha256": hashlib.sha256(rel.encode()).hexdigest(),
        "embed_key": hashlib.sha256(b"k" + rel.encode()).hexdigest(),
        "sidecar": "",
    }
    values.update(changes)
    return FileState(**values)


def test_known_files_give_back_what_was_stored() -> None:
    states = [
        _state(1),
        _state(2, embed_key=None, sidecar="txt12@34"),
        _state(3, id="not-a-uuid"),  # kept as it is
        _state(4, sha256="ABC"),  # not 64 lowercase hex digits: kept as it is
        _state(5, id=str(uuid.uuid4()).upper()),  # upper case would not round-trip
    ]
    known = KnownFiles(states)
    assert len(known) == len(states)
    for s in states:
        assert known[s.path] == s
        assert known.unchanged(s.path, s.size, s.mtime_ns, s.sidecar)
        assert not known.unchanged(s.path, s.size + 1, s.mtime_ns, s.sidecar)
        assert not known.unchanged(s.path, s.size, s.mtime_ns, "txt1@1")
    del known[states[0].path]
    assert states[0].path not in known and not known.unchanged(states[0].path, 0, 0, "")


def test_known_files_take_a_quarter_of_the_memory_of_file_states() -> None:
    """Bounded: under 300 bytes per file for typical paths (the pydantic objects it replaces
    take about 860; bench/rescan.py reports both)."""
    states = [_state(n) for n in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        known = KnownFiles(states)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(known) == 20_000
    assert used / len(states) < 300


async def test_rescans_read_the_index_once_and_stay_current(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        index = p.runtime.index
        scrolls = 0
        real = index.file_states

        def counted() -> Any:
            nonlocal scrolls
            scrolls += 1
            return real()

        index.file_states = counted  # type: ignore[method-assign]  # counts, still real
        try:
            f.save(f.photo(1), p.root / "a.png", "PNG")
            f.save(f.photo(2), p.root / "sub/b.png", "PNG")
            first = await p.ingestor.reconcile()
            assert first.indexed == 2 and scrolls == 1
            f.save(f.photo(3), p.root / "c.png", "PNG")
            (p.root / "a.png").unlink()
            second = await p.ingestor.reconcile()
            assert (second.indexed, second.removed, second.unchanged) == (1, 1, 1)
            third = await p.ingestor.reconcile()
            assert (third.indexed, third.removed, third.unchanged) == (0, 0, 2)
            assert scrolls == 1, "a rescan scrolled the index again"
        finally:
            index.file_states = real  # type: ignore[method-assign]
        assert sorted(s.path for s in index.file_states()) == ["c.png", "sub/b.png"]


def test_the_walk_gives_rows_only_for_files_the_state_does_not_hold(tmp_path: Path) -> None:
    for name in ("same.jpg", "touched.jpg", "captioned.jpg", "new.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "captioned.txt").write_text("a caption")

    def state(name: str, **changes: Any) -> FileState:
        st = (tmp_path / name).stat()
        values: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **changes}
        return _state(0, path=name, **values)

    known = KnownFiles(
        [
            state("same.jpg"),
            state("touched.jpg", mtime_ns=1),
            state("captioned.jpg"),  # its sidecar is new
            _state(0, path="gone.jpg"),
        ]
    )
    present: set[str] = set()
    rows = [
        row
        for batch in walk_rows(
            tmp_path, Rules(include=("*.jpg",)), present=present, unchanged=known.unchanged
        )
        for row in batch
    ]
    assert present == {"same.jpg", "touched.jpg", "captioned.jpg", "new.jpg"}
    assert sorted(r[0] for r in rows) == ["captioned.jpg", "new.jpg", "touched.jpg"]
    assert known.missing_from(present) == ["gone.jpg"]


async def test_a_rescan_of_unchanged_files_makes_no_object_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common pass of the daemon (nothing changed) compares walk rows with the packed
    state; only a file that changed becomes a ``Seen`` record (it made one per file)."""
    root = tmp_path / "tree"
    files = {}
    for n in range(60):
        path = root / f"f{n % 3}" / f"img_{n:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        files[f"f{n % 3}/img_{n:03d}.jpg"] = path
    index = EdgeIndex(tmp_path / "store", auto_build=False)
    index.ensure_collection(CollectionSpec(name="images", model="tiny", dimension=8))
    index.upsert(
        [
            Point(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, rel)),
                vector=[1.0] + [0.0] * 7,
                payload=FileState(
                    id=str(uuid.uuid5(uuid.NAMESPACE_URL, rel)),
                    path=rel,
                    size=path.stat().st_size,
                    mtime_ns=path.stat().st_mtime_ns,
                    sha256=hashlib.sha256(rel.encode()).hexdigest(),
                    source="s",
                ).model_dump(),
            )
            for rel, path in files.items()
        ]
    )
    made: list[str] = []

    class CountedSeen(candidates.Seen):
        def __init__(self, rel: str, *args: Any) -> None:
            made.append(rel)
            super().__init__(rel, *args)

    monkeypatch.setattr(candidates, "Seen", CountedSeen)
    monkeypatch.setattr(source_folder, "Seen", CountedSeen)
    ingestor = Indexer(
        source_folder.FolderSource(root, name="s", rules=Rules(include=("*.jpg",))),
        embedder=TinyEmbedder(dimension=8),
        index=index,
        journal=Journal(tmp_path / "journal.sqlite"),
    )
    try:
        summary = await ingestor.reconcile()
        assert summary.unchanged == 60 and summary.removed == 0
        assert made == []
        touched = files["f1/img_001.jpg"]
        os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
        summary = await ingestor.reconcile()
        assert set(made) == {"f1/img_001.jpg"}  # its pass may stat it again
        assert summary.unchanged == 59
    finally:
        await ingestor.close()
        index.close()
