"""The HNSW graph outlives the process that started it (issue: a folder rename at scale).

A short-lived writer (``imgrag ingest``, a script) used to abort its background build at
exit, so the next process searched every vector. The builder now runs on, in its own
session, and the next opener adopts it: it replays what was written since (from the
``build.touched`` log, so even after kill -9), swaps the graph in, and never starts a second
build beside it. Each test opens the store afterwards with ``auto_build=False``: only an
adopted build can give it a graph."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores import EdgeIndex
from imgrag.connectors.stores import edge_builds as builds

from tests.conftest import wait_until
from tests.test_cli_ingest import cli_env, imgrag, make_folder
from tests.test_index_crash import Lines, spawn

DIM = 64
SPEC = CollectionSpec(name="images", model="m", dimension=DIM)


def _points(names: range, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(names), DIM))
    return [
        Point(id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(n))), vector=v.tolist(), payload={"n": n})
        for n, v in zip(names, vectors, strict=True)
    ]


def _reader(store: Path) -> EdgeIndex:
    index = EdgeIndex(store, auto_build=False)
    index.ensure_collection(SPEC)
    return index


def _close_after_the_builder_ends(index: EdgeIndex, store: Path) -> EdgeIndex:
    """Close ``index`` once its builder has ended (close swaps the build in); a reader."""
    wait_until(
        lambda: not builds.lock_held(store / "images"), timeout=120, what="the builder to end"
    )
    index.close()
    return _reader(store)


def test_a_build_started_by_a_closed_process_is_adopted_not_restarted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    index = EdgeIndex(store, index_threshold=1_000, settle_seconds=3600, auto_build=False)
    index.ensure_collection(SPEC)
    index.upsert(_points(range(1_500)))
    assert index.request_index_build()
    assert index.status().building  # the build runs...
    index.close()  # ...and closing leaves it running
    meta = builds.BuildMeta.model_validate_json((store / "images" / builds.META).read_text())
    # Short-lived readers come and go while it builds: each adopts the same builder.
    for _ in range(3):
        reader = _reader(store)
        try:
            status = reader.status()
            if status.building:
                assert status.build_adopted
                again = builds.BuildMeta.model_validate_json(
                    (store / "images" / builds.META).read_text()
                )
                assert again.pid == meta.pid and again.final == meta.final
        finally:
            reader.close()
    reader = _reader(store)
    try:
        assert reader.wait_for_build(timeout=120)
        status = reader.status()
        assert status.indexed >= 1_000 and status.last_error is None
        # One build in all: the generation it made is the live one.
        assert (store / "images" / "CURRENT").read_text().strip() == meta.final
        assert not (store / "images" / builds.META).exists()
    finally:
        reader.close()


def test_closing_swaps_in_a_build_that_has_finished(tmp_path: Path) -> None:
    store = tmp_path / "store"
    index = EdgeIndex(store, index_threshold=1_000, settle_seconds=3600, auto_build=False)
    index.ensure_collection(SPEC)
    index.upsert(_points(range(1_500)))
    index._stop_maintenance()  # nothing swaps the build in but close itself
    assert index.request_index_build()
    reader = _close_after_the_builder_ends(index, store)
    try:
        status = reader.status()
        assert not status.building
        assert status.indexed >= 1_000
    finally:
        reader.close()


WRITER = textwrap.dedent(
    """
    import sys, uuid
    import numpy as np
    from imgrag.connectors.index import CollectionSpec, Point
    from imgrag.connectors.stores import EdgeIndex

    def points(names):
        rng = np.random.default_rng(names.start)
        vectors = rng.standard_normal((len(names), 64))
        return [Point(id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(n))), vector=v.tolist(),
                      payload={"n": n}) for n, v in zip(names, vectors)]

    index = EdgeIndex(sys.argv[1], index_threshold=1000, settle_seconds=3600, auto_build=False)
    index.ensure_collection(CollectionSpec(name="images", model="m", dimension=64))
    index.upsert(points(range(1500)))
    index._stop_maintenance()  # the build is never swapped in here: the kill comes first
    assert index.request_index_build()
    index.upsert(points(range(1500, 1550)))  # written during the build
    index.delete_ids([p.id for p in points(range(0, 20))])
    print("written", flush=True)
    sys.stdin.read()
    """
)


def test_kill_9_during_a_build_then_the_next_opener_finishes_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    writer = spawn(WRITER, store)
    try:
        assert Lines(writer).next(timeout=60) == "written"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        for pipe in (writer.stdin, writer.stdout, writer.stderr):
            if pipe is not None:
                pipe.close()
    # The orphaned builder runs on (it is meant to); the next opener adopts exactly it.
    meta = builds.BuildMeta.model_validate_json((store / "images" / builds.META).read_text())
    reader = _reader(store)
    try:
        assert reader.wait_for_build(timeout=120)
        status = reader.status()
        assert status.builds == 1 and status.last_error is None, status
        assert (store / "images" / "CURRENT").read_text().strip() == meta.final
        assert not builds.lock_held(store / "images")  # no builder left behind
        # What the dead writer wrote during the build was replayed from its log.
        assert status.last_build_replayed == 70
        assert reader.count() == 1_530
        assert reader.vector_by_id(_points(range(0, 20))[0].id) is None
        late = _points(range(1_500, 1_550), seed=1_500)[7]
        [top] = reader.search(late.vector, limit=1)
        assert top.id == late.id and top.score == pytest.approx(1.0, abs=1e-4)
        assert status.indexed >= 1_000
    finally:
        reader.close()


def test_a_one_shot_ingest_leaves_its_points_in_a_graph(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    """The real CLI: an ingest of more points than the threshold exits, and a fresh process
    finds them in a graph, and status says so."""
    inbox = tmp_path / "inbox"
    make_folder(inbox, 260)
    env = cli_env(
        tmp_path,
        emulator,
        IMGRAG_STORE__EDGE_INDEX_THRESHOLD="200",
        # No build while it runs: only the one its exit leaves behind can give a graph.
        IMGRAG_STORE__EDGE_SETTLE_SECONDS="3600",
        IMGRAG_STORE__EDGE_BUILD_AFTER_SECONDS="3600",
    )
    done = imgrag("ingest", str(inbox), env=env)
    assert done.returncode == 0, done.stderr
    store = tmp_path / "state" / "store"
    collection = next(p for p in store.iterdir() if (p / "CURRENT").exists())
    spec = EdgeIndex(store, auto_build=False)
    try:
        recorded = spec.recorded_spec(collection.name)
        assert recorded is not None
        spec.ensure_collection(recorded)
        assert spec.wait_for_build(timeout=120)
        status = spec.status()
        assert status.points == 260 and status.indexed == 260, status
    finally:
        spec.close()
    shown = imgrag("status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    graph = json.loads(shown.stdout)["store"]["graph"]
    assert graph["points"] == 260 and graph["outside"] == 0 and not graph["building"]


def test_a_rename_leaves_every_point_outside_the_graph_until_a_build(tmp_path: Path) -> None:
    """A rename deletes each point from its graph segment and writes it anew. The engine's
    indexed count keeps counting the deleted ones, so only the store's own count of what was
    written since the build sees the tail, and starts the build it needs at close."""
    store = tmp_path / "store"
    index = EdgeIndex(store, index_threshold=1_000, settle_seconds=3600, auto_build=False)
    index.ensure_collection(SPEC)
    old = _points(range(1_500))
    index.upsert(old)
    assert index.request_index_build() and index.wait_for_build(timeout=120)
    assert index.graph_status().outside == 0
    index.close()
    writer = EdgeIndex(store, index_threshold=1_000, settle_seconds=3600)
    writer.ensure_collection(SPEC)
    moved = [Point(id=str(uuid.uuid4()), vector=p.vector, payload=p.payload) for p in old]
    for start in range(0, len(old), 256):
        writer.upsert(moved[start : start + 256])
        writer.delete_ids([p.id for p in old[start : start + 256]])
    graph = writer.graph_status()
    assert graph.points == 1_500 and graph.outside == 1_500 and graph.in_graph == 0
    writer.close()  # the threshold's worth is outside: a build starts and outlives it
    reader = _reader(store)
    try:
        assert reader.graph_status().outside == 1_500  # the count outlives the process too
        assert reader.wait_for_build(timeout=120)
        graph = reader.graph_status()
        assert graph.outside == 0 and graph.in_graph == 1_500
        [top] = reader.search(moved[3].vector, limit=1)
        assert top.id == moved[3].id
    finally:
        reader.close()


def test_points_moved_during_a_build_stay_counted_outside_after_it(tmp_path: Path) -> None:
    """A build that starts in the middle of a fast rename is swapped in with most of the
    rename replayed onto it: those points are outside its graphs, and the count says so
    (the engine's indexed count, which keeps the deleted originals, would say none)."""
    store = tmp_path / "store"
    index = EdgeIndex(store, index_threshold=1_000, settle_seconds=3600, auto_build=False)
    index.ensure_collection(SPEC)
    old = _points(range(1_500))
    index.upsert(old)
    index._stop_maintenance()  # the build is swapped in by close, after the writes
    assert index.request_index_build()
    moved = [Point(id=str(uuid.uuid4()), vector=p.vector, payload=p.payload) for p in old]
    index.upsert(moved)
    index.delete_ids([p.id for p in old])
    reader = _close_after_the_builder_ends(index, store)
    try:
        graph = reader.graph_status()
        assert graph.points == 1_500 and not graph.building
        assert graph.outside == 1_500 and graph.in_graph == 0
    finally:
        reader.close()
