"""The embedded index builds its graph under a steady trickle of writes, and keeps the
writes made while a build runs (real qdrant-edge shards, real child build processes)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores import open_index
from imgrag.connectors.stores.edge import EdgeIndex
from imgrag.pipeline.config import load_settings

DIM = 64


def assert_kept(index: EdgeIndex, points: Sequence[Point]) -> None:
    """Each point is stored with its vector (the engine keeps it normalized for cosine)."""
    for p in points:
        stored = index.vector_by_id(p.id)
        assert stored is not None, p.id
        assert np.allclose(stored, np.asarray(p.vector) / np.linalg.norm(p.vector), atol=1e-4)


def _point(rng: np.random.Generator, n: int) -> Point:
    vector = rng.standard_normal(DIM)
    return Point(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"trickle-{n}")),
        vector=vector.tolist(),
        payload={"n": n},
    )


class _Trickle:
    """One point every ``interval`` seconds on a thread: never quiet for ``settle_seconds``."""

    def __init__(self, index: EdgeIndex, interval: float) -> None:
        self.index = index
        self.interval = interval
        self.written: list[Point] = []
        self.during_build: list[Point] = []
        self._stop = threading.Event()
        self._rng = np.random.default_rng(11)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        # Event.wait paces the source (the rate is the point of the test); it synchronizes
        # nothing: the test waits on the index's own build counter.
        while not self._stop.wait(self.interval):
            p = _point(self._rng, n)
            n += 1
            before = self.index.status().building
            self.index.upsert([p])
            if before and self.index.status().building:
                self.during_build.append(p)
            self.written.append(p)

    def __enter__(self) -> _Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_steady_trickle_gets_a_graph_and_writes_during_builds_are_kept(
    tmp_path: Path,
) -> None:
    # Writes every 20 ms never leave the 2 s of quiet the threshold rule waits for; the
    # time rule must start builds anyway, once 100 points (a quarter of 400) have waited 1 s.
    index = EdgeIndex(
        tmp_path / "store", index_threshold=400, settle_seconds=2.0, build_after_seconds=1.0
    )
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        with _Trickle(index, interval=0.02) as trickle:
            assert index.wait_for_builds(1, timeout=90), "no build under a steady trickle"
            assert index.status().indexed > 0
            # Keep writing until a second build has run with writes landing during it.
            assert index.wait_for_builds(2, timeout=90), "no second build under the trickle"
        assert index.wait_for_build(timeout=60)
        assert trickle.during_build, "no write landed while a build ran"
        assert index.count() == len(trickle.written)
        assert_kept(index, trickle.during_build[:: max(1, len(trickle.during_build) // 20)])
    finally:
        index.close()


def test_points_below_a_graphs_size_do_not_start_builds(tmp_path: Path) -> None:
    """Fewer points than the engine puts in a graph: a build would copy the shard for
    nothing, however long they wait."""
    index = EdgeIndex(
        tmp_path / "store", index_threshold=400, settle_seconds=0.0, build_after_seconds=0.0
    )
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        rng = np.random.default_rng(5)
        index.upsert([_point(rng, n) for n in range(90)])
        checks = index.threshold_checks
        deadline = time.monotonic() + 30
        while index.threshold_checks < checks + 2 and time.monotonic() < deadline:
            index.wait_for_builds(1, timeout=0.2)
        assert index.threshold_checks >= checks + 2
        assert index.status().builds == 0 and not index.status().building
        index.upsert([_point(rng, n) for n in range(90, 120)])  # 120 >= 100: a graph's worth
        assert index.wait_for_builds(1, timeout=60)
    finally:
        index.close()


class _HookedIndex(EdgeIndex):
    """Runs a write and a search from another thread while a rebuilt shard catches up."""

    outcome: str | None = None

    def _replayed_chunk(self) -> None:
        if self.outcome is not None:
            return
        rng = np.random.default_rng(99)
        self.late = _point(rng, 10_000)
        done = threading.Event()
        found: list[int] = []

        def other_thread() -> None:
            self.upsert([self.late])
            found.append(len(self.search(self.late.vector, limit=3)))
            done.set()

        threading.Thread(target=other_thread, daemon=True).start()
        # A replay holding the write lock would keep this write waiting until the timeout.
        self.outcome = "served" if done.wait(30) else "blocked"


def test_writes_and_searches_go_on_while_a_rebuilt_shard_catches_up(tmp_path: Path) -> None:
    """The writes made during a build are replayed onto the copy in chunks without the
    write lock (they took it, and the GIL, for the whole replay), and none is lost."""
    index = _HookedIndex(tmp_path / "store", index_threshold=400, auto_build=False)
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        rng = np.random.default_rng(3)
        index.upsert([_point(rng, n) for n in range(400)])
        assert index.request_index_build()
        # The child needs far longer than this to start, so all 500 are written during it.
        during = [_point(rng, n) for n in range(400, 900)]
        index.upsert(during)
        assert index.status().building
        assert index.wait_for_builds(1, timeout=120)
        assert index.outcome == "served", index.outcome
        assert index.status().last_build_replayed >= len(during)
        assert index.count() == 901
        assert_kept(index, [*during[::50], index.late])
    finally:
        index.close()


def test_the_build_triggers_come_from_the_store_settings(tmp_path: Path) -> None:
    """``[store]`` edge_index_threshold / edge_build_after_seconds / edge_settle_seconds
    reach the embedded store: with a 1 s age trigger a 20 ms trickle gets a graph once 500
    points (a quarter of 2,000) are in, before the count is reached or 60 s (the default)
    have passed."""
    profile = tmp_path / "profile.toml"
    profile.write_text(
        "[store]\nkind = 'edge'\nedge_index_threshold = 2000\n"
        "edge_build_after_seconds = 1.0\nedge_settle_seconds = 2.0\n"
    )
    settings = load_settings(profile)
    index = open_index(settings.store, StatePaths.under(tmp_path / "state"))
    assert isinstance(index, EdgeIndex)
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        with _Trickle(index, interval=0.02):
            assert index.wait_for_builds(1, timeout=35), "no build under a steady trickle"
        assert index.status().indexed > 0
    finally:
        index.close()


def test_points_written_during_a_build_count_toward_the_next(tmp_path: Path) -> None:
    """What a build leaves outside its graphs because it was written meanwhile is part of
    the tail the next build is for: 60 such points and 50 new ones make a graph's worth
    (100, a quarter of 400). They were subtracted, so under a trickle the tail outside any
    graph grew to a graph's size on top of them before another build started."""
    index = EdgeIndex(
        tmp_path / "store", index_threshold=400, settle_seconds=0.0, build_after_seconds=0.0
    )
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=DIM))
        rng = np.random.default_rng(8)
        index.upsert([_point(rng, n) for n in range(300)])
        index.request_index_build()  # or the maintenance thread started it already
        assert index.status().building
        index.upsert([_point(rng, n) for n in range(300, 360)])  # during the build
        assert index.wait_for_builds(1, timeout=90)
        status = index.status()
        assert status.points - status.indexed == 60, status
        checks = index.threshold_checks
        deadline = time.monotonic() + 30
        while index.threshold_checks < checks + 2 and time.monotonic() < deadline:
            index.wait_for_builds(2, timeout=0.2)
        assert index.status().builds == 1, "60 points are below a graph's size"
        index.upsert([_point(rng, n) for n in range(360, 410)])
        assert index.wait_for_builds(2, timeout=60), "110 points outside a graph, no build"
        assert index.wait_for_build(timeout=60)
        status = index.status()
        assert status.points - status.indexed < 60, status
    finally:
        index.close()
