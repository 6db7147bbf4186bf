"""Rescans keep the index's file state in memory: read once, packed, kept current."""

from __future__ import annotations

import hashlib
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.index import FileState
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
