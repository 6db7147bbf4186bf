"""The embedded store under hard failure: kill -9 mid-write (and mid-build), a second
process opening the same store, and the background HNSW build with writes racing it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from imgrag import StoreLocked
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores import EdgeIndex
from qdrant_client.http import models as qm

from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[1]
DIM = 32
SPEC = CollectionSpec(name="images", model="crash-model", dimension=DIM)

WRITER = textwrap.dedent(
    """
    import sys, uuid
    import numpy as np
    from imgrag.connectors.index import CollectionSpec, Point
    from imgrag.connectors.stores import EdgeIndex

    index = EdgeIndex(sys.argv[1], index_threshold=300, settle_seconds=0.0)
    index.ensure_collection(CollectionSpec(name="images", model="crash-model", dimension=32))
    rng = np.random.default_rng(7)
    batch = 0
    while True:
        ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{batch}/{i}")) for i in range(25)]
        vectors = rng.standard_normal((25, 32)).tolist()
        index.upsert([Point(id=i, vector=v, payload={"path": i}) for i, v in zip(ids, vectors)])
        # Printed only after upsert returned: every id here was acknowledged.
        print("ack", index.status().builds, " ".join(ids), flush=True)
        batch += 1
    """
)

HOLDER = textwrap.dedent(
    """
    import sys
    from imgrag.connectors.index import CollectionSpec
    from imgrag.connectors.stores import EdgeIndex

    index = EdgeIndex(sys.argv[1])
    index.ensure_collection(CollectionSpec(name="images", model="crash-model", dimension=32))
    print("ready", flush=True)
    sys.stdin.read()
    index.close()
    print("closed", flush=True)
    """
)


def spawn(code: str, store: Path) -> subprocess.Popen[str]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


class Lines:
    """Reads a child's stdout on a thread so the test can wait for lines with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self.queue.put(line.rstrip("\n"))
            self.queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float) -> str:
        line = self.queue.get(timeout=timeout)
        if line is None:
            raise AssertionError("the child exited early")
        return line


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path, children: list) -> None:
    store = tmp_path / "store"
    writer = spawn(WRITER, store)
    children.append(writer)
    lines = Lines(writer)
    acked: list[str] = []
    builds = 0
    deadline = time.monotonic() + 45
    # Enough acks, and at least one background build swapped in, so the kill can land
    # anywhere: mid-upsert, mid-copy, mid-build or mid-swap.
    while len(acked) < 1_000 or builds < 1:
        assert time.monotonic() < deadline, f"only {len(acked)} acks, {builds} builds"
        word, count, *ids = lines.next(timeout=30).split()
        assert word == "ack"
        builds = int(count)
        acked.extend(ids)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    # Read what the writer flushed to the pipe before it died: also acknowledged.
    while True:
        try:
            line = lines.queue.get(timeout=5)
        except queue.Empty:
            break
        if line is None:
            break
        acked.extend(line.split()[2:])

    index = EdgeIndex(store)
    try:
        index.ensure_collection(SPEC)
        stored = index.count(qm.Filter(must=[qm.HasIdCondition(has_id=acked)]))
        assert stored == len(acked)
        # A build the writer left running is adopted and finished, not left beside.
        assert index.wait_for_build(timeout=60)
        assert index.count(qm.Filter(must=[qm.HasIdCondition(has_id=acked)])) == len(acked)
        collection = store / "images"
        generations = [p.name for p in collection.iterdir() if p.name.startswith("gen-")]
        assert generations == [(collection / "CURRENT").read_text().strip()]
        extra = Point(id=str(uuid.uuid4()), vector=[1.0] * DIM, payload={"path": "after"})
        before = index.count()
        index.upsert([extra])
        assert index.count() == before + 1
        assert index.vector_by_id(extra.id) is not None
    finally:
        index.close()


def test_second_process_gets_store_locked_naming_the_owner(tmp_path: Path, children: list) -> None:
    store = tmp_path / "store"
    holder = spawn(HOLDER, store)
    children.append(holder)
    lines = Lines(holder)
    assert lines.next(timeout=30) == "ready"
    with pytest.raises(StoreLocked) as info:
        EdgeIndex(store)
    message = str(info.value)
    assert info.value.pid == holder.pid
    assert f"process {holder.pid}" in message and str(store) in message
    assert "daemon" in message and "Qdrant server" in message and "\n" not in message
    # A clean close releases the store...
    assert holder.stdin is not None
    holder.stdin.close()
    assert lines.next(timeout=30) == "closed"
    holder.wait(timeout=30)
    EdgeIndex(store).close()
    # ...and so does a crash: the OS drops the lock with the process, the pid file is stale.
    holder = spawn(HOLDER, store)
    children.append(holder)
    lines = Lines(holder)
    assert lines.next(timeout=30) == "ready"
    with pytest.raises(StoreLocked):
        EdgeIndex(store)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    index = EdgeIndex(store)
    index.ensure_collection(SPEC)
    index.close()


def _points(rng: np.random.Generator, names: range, dim: int) -> list[Point]:
    vectors = rng.standard_normal((len(names), dim))
    return [
        Point(id=str(uuid.uuid5(uuid.NAMESPACE_URL, str(n))), vector=v.tolist(), payload={"n": n})
        for n, v in zip(names, vectors, strict=True)
    ]


def test_background_build_replays_writes_made_during_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    dim = 64
    index = EdgeIndex(tmp_path / "store", index_threshold=1_500, settle_seconds=60)
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=dim))
        first = _points(rng, range(2_000), dim)
        index.upsert(first)
        assert index.status().indexed == 0
        assert index.request_index_build()
        late = _points(rng, range(2_000, 2_050), dim)
        index.upsert(late)
        index.delete_ids([p.id for p in first[:30]])
        # Still building after the writes returned: they landed during the build.
        assert index.status().building
        assert index.wait_for_build(timeout=60)
        status = index.status()
        assert status.builds == 1 and status.last_error is None
        assert status.last_build_replayed == 80
        assert status.indexed >= 1_500
        assert index.count() == 2_020
        assert index.vector_by_id(first[0].id) is None
        for p in (late[0], first[100]):
            [top] = index.search(p.vector, limit=1)
            assert top.id == p.id and top.score == pytest.approx(1.0, abs=1e-4)
    finally:
        index.close()
    # The swapped-in generation is what reopens.
    index = EdgeIndex(tmp_path / "store")
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=dim))
        assert index.count() == 2_020 and index.status().indexed >= 1_500
    finally:
        index.close()


def test_threshold_starts_a_build_without_being_asked(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    index = EdgeIndex(tmp_path / "store", index_threshold=1_000, settle_seconds=0.0)
    try:
        index.ensure_collection(CollectionSpec(name="images", model="m", dimension=64))
        index.upsert(_points(rng, range(900), 64))
        # Wait until the maintenance thread has looked at these points, then check it
        # decided against a build: below the threshold.
        wait_until(lambda: index.threshold_checks >= 1, timeout=30, what="a threshold check")
        assert index.status().builds == 0 and not index.status().building
        index.upsert(_points(rng, range(900, 1_300), 64))
        assert index.wait_for_builds(1, timeout=60)
        assert index.status().indexed >= 1_000
    finally:
        index.close()
