"""One contract for every Index: the embedded store, qdrant-client's local mode, and a real
Qdrant server when QDRANT_URL is set. Real engines only."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgrag import CollectionMismatch, StoreError
from imgrag.connectors.config import StoreConfig
from imgrag.connectors.index import CollectionSpec, Index, Point
from imgrag.connectors.paths import StatePaths
from imgrag.connectors.stores import EdgeIndex, QdrantIndex, open_index
from pydantic import SecretStr
from qdrant_client.http import models as qm

DIM = 8
KINDS = ["edge", "local", "server"]


def pid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def unit(*xs: float) -> list[float]:
    v = list(xs) + [0.0] * (DIM - len(xs))
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def point(name: str, vector: list[float], **payload: object) -> Point:
    folder, _, _ = name.rpartition("/")
    base: dict[str, object] = {
        "path": name,
        "folder": folder,
        "size": 100,
        "mtime_ns": 1_700_000_000_000_000_001,
        "sha256": f"sha-{name}",
        "embed_key": f"key-{name}",
    }
    base.update(payload)
    return Point(id=pid(name), vector=vector, payload=base)


class Store:
    """Opens (and reopens) one index of a kind; closes and cleans up after the test."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.collection = f"imgrag_test_{uuid.uuid4().hex[:12]}" if kind == "server" else "images"
        self.opened: list[Index] = []

    def open(self) -> Index:
        index: Index
        if self.kind == "edge":
            index = EdgeIndex(self.tmp / "store")
        elif self.kind == "local":
            index = QdrantIndex(StoreConfig(kind="qdrant"), location=self.tmp / "local")
        else:
            key = os.environ.get("QDRANT_API_KEY")
            config = StoreConfig(
                kind="qdrant",
                url=os.environ["QDRANT_URL"],
                api_key=SecretStr(key) if key else None,
            )
            index = QdrantIndex(config)
        self.opened.append(index)
        return index

    def spec(self, model: str = "model-a", dimension: int = DIM) -> CollectionSpec:
        return CollectionSpec(name=self.collection, model=model, dimension=dimension)

    def ready(self, model: str = "model-a") -> Index:
        index = self.open()
        index.ensure_collection(self.spec(model))
        return index

    def reopen(self, index: Index) -> Index:
        index.close()
        return self.ready()

    def cleanup(self) -> None:
        if self.kind == "server" and self.opened:
            self.opened[-1].drop_collection(self.collection)
        for index in self.opened:
            index.close()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "server" and not os.environ.get("QDRANT_URL"):
        pytest.skip("set QDRANT_URL (and QDRANT_API_KEY if needed) to run against a Qdrant server")
    s = Store(request.param, tmp_path)
    yield s
    s.cleanup()


@pytest.fixture
def index(store: Store) -> Index:
    return store.ready()


def test_upsert_count_and_vector_by_id(index: Index) -> None:
    index.upsert([point("a/1.png", unit(1, 0)), point("a/2.png", unit(0, 1))])
    assert index.count() == 2
    got = index.vector_by_id(pid("a/1.png"))
    assert got is not None and len(got) == DIM
    assert got == pytest.approx(unit(1, 0), abs=1e-5)
    assert index.vector_by_id(pid("missing")) is None
    assert index.vector_by_id("not-a-uuid") is None


def test_graph_status_accounts_for_every_point(index: Index) -> None:
    """Points in graphs plus points searched one by one are all the points (status shows
    both; Qdrant's collection info gives ``indexed_vectors_count`` and ``points_count``)."""
    index.upsert([point(f"g/{i}.png", unit(1, i)) for i in range(5)])
    graph = index.graph_status()
    assert graph.points == 5 == index.count()
    assert graph.in_graph + graph.outside == 5 and graph.outside >= 0


def test_upsert_is_idempotent_and_replaces(index: Index) -> None:
    index.upsert([point("x.png", unit(1, 0), size=1)])
    index.upsert([point("x.png", unit(0, 1), size=2)])
    assert index.count() == 1
    [state] = list(index.file_states())
    assert state.size == 2
    assert index.vector_by_id(pid("x.png")) == pytest.approx(unit(0, 1), abs=1e-5)


def test_search_ranks_by_cosine_with_threshold(index: Index) -> None:
    index.upsert(
        [
            point("near.png", unit(1, 0.1)),
            point("mid.png", unit(1, 1)),
            point("far.png", unit(-1, 0)),
        ]
    )
    hits = index.search(unit(1, 0), limit=3)
    assert [h.payload["path"] for h in hits] == ["near.png", "mid.png", "far.png"]
    assert hits[0].id == pid("near.png")
    assert hits[0].score == pytest.approx(1 / math.sqrt(1.01), abs=1e-4)
    assert hits[0].score > hits[1].score > hits[2].score
    assert len(index.search(unit(1, 0), limit=1)) == 1
    above = index.search(unit(1, 0), limit=3, score_threshold=0.5)
    assert {h.payload["path"] for h in above} == {"near.png", "mid.png"}


def test_search_filters_keyword_integer_and_datetime(index: Index) -> None:
    index.upsert(
        [
            point("p/1.png", unit(1, 0), tags=["cat"], size=10, taken_at="2023-05-01T10:00:00Z"),
            point("p/2.png", unit(1, 0.2), tags=["dog"], size=20, taken_at="2024-05-01T10:00:00Z"),
            point("q/3.png", unit(1, 0.4), tags=["cat", "dog"], size=30),
        ]
    )

    def paths(flt: qm.Filter) -> set[str]:
        return {h.payload["path"] for h in index.search(unit(1, 0), limit=10, filter=flt)}

    cats = qm.Filter(must=[qm.FieldCondition(key="tags", match=qm.MatchValue(value="cat"))])
    assert paths(cats) == {"p/1.png", "q/3.png"}
    big = qm.Filter(must=[qm.FieldCondition(key="size", range=qm.Range(gte=20))])
    assert paths(big) == {"p/2.png", "q/3.png"}
    recent = qm.Filter(
        must=[qm.FieldCondition(key="taken_at", range=qm.DatetimeRange(gte="2024-01-01T00:00:00Z"))]
    )
    assert paths(recent) == {"p/2.png"}
    not_p = qm.Filter(must_not=[qm.FieldCondition(key="folder", match=qm.MatchValue(value="p"))])
    assert paths(not_p) == {"q/3.png"}
    assert index.count(cats) == 2
    assert index.count(qm.Filter(must=[qm.HasIdCondition(has_id=[pid("p/2.png")])])) == 1


def test_group_by_sha256_keeps_the_best_copy(index: Index) -> None:
    index.upsert(
        [
            point("copy1.png", unit(1, 0.05), sha256="same"),
            point("copy2.png", unit(1, 0.1), sha256="same"),
            point("copy3.png", unit(1, 0.15), sha256="same"),
            point("other.png", unit(1, 0.3), sha256="other"),
        ]
    )
    plain = index.search(unit(1, 0), limit=2)
    assert [h.payload["path"] for h in plain] == ["copy1.png", "copy2.png"]
    grouped = index.search(unit(1, 0), limit=2, group_by_sha256=True)
    assert [h.payload["path"] for h in grouped] == ["copy1.png", "other.png"]


def test_delete_ids_and_paths(index: Index) -> None:
    index.upsert([point(f"d/{i}.png", unit(1, i)) for i in range(5)])
    index.delete_ids([pid("d/0.png"), pid("never-stored")])
    index.delete_paths(["d/1.png", "d/2.png"])
    assert sorted(s.path for s in index.file_states()) == ["d/3.png", "d/4.png"]
    index.delete_ids([])
    index.delete_paths([])
    assert index.count() == 2


def test_delete_folder_takes_the_subtree_only(index: Index) -> None:
    names = ["a/1.png", "a/b/2.png", "a/b/c/3.png", "ab/4.png", "b/a/5.png", "top.png"]
    index.upsert([point(n, unit(1, i)) for i, n in enumerate(names)])
    index.delete_folder("a")
    assert sorted(s.path for s in index.file_states()) == ["ab/4.png", "b/a/5.png", "top.png"]
    index.delete_folder("b/a/")
    assert sorted(s.path for s in index.file_states()) == ["ab/4.png", "top.png"]


def test_file_states_page_through_everything(index: Index) -> None:
    n = 1_100  # more than one scroll page
    index.upsert([point(f"many/{i}.png", unit(1, i / n), embed_key=None) for i in range(n)])
    index.upsert([Point(id=pid("no-file"), vector=unit(0, 1), payload={"note": "not a file"})])
    states = list(index.file_states())
    assert len(states) == n
    assert len({s.id for s in states}) == n
    one = next(s for s in states if s.path == "many/7.png")
    assert one.id == pid("many/7.png")
    assert (one.size, one.mtime_ns, one.sha256, one.embed_key) == (
        100,
        1_700_000_000_000_000_001,
        "sha-many/7.png",
        None,
    )


def test_vector_by_embed_key(index: Index) -> None:
    index.upsert([point("k/1.png", unit(0, 0, 1), embed_key="abc"), point("k/2.png", unit(1))])
    assert index.vector_by_embed_key("abc") == pytest.approx(unit(0, 0, 1), abs=1e-5)
    assert index.vector_by_embed_key("nope") is None


def test_reopen_keeps_points(store: Store) -> None:
    index = store.ready()
    index.upsert([point("keep.png", unit(1, 2, 3))])
    index = store.reopen(index)
    assert index.count() == 1
    assert index.vector_by_id(pid("keep.png")) == pytest.approx(unit(1, 2, 3), abs=1e-5)


def test_collection_made_by_another_model_is_refused(store: Store) -> None:
    index = store.ready("model-a")
    index.upsert([point("m.png", unit(1))])
    index.close()
    other = store.open()
    with pytest.raises(CollectionMismatch) as info:
        other.ensure_collection(store.spec("model-b"))
    message = str(info.value)
    assert "\n" not in message
    assert "model-a" in message and "model-b" in message
    assert "IMGRAG_STORE__COLLECTION" in message and "deleting the collection" in message
    with pytest.raises(CollectionMismatch) as info:
        other.ensure_collection(store.spec("model-a", dimension=DIM * 2))
    assert f"{DIM} dims" in str(info.value) and f"{DIM * 2} dims" in str(info.value)
    # The way out named in the message works: drop, then create for the new model.
    other.drop_collection(store.collection)
    other.ensure_collection(store.spec("model-b"))
    assert other.count() == 0


def test_wrong_dimension_vector_is_a_store_error(index: Index) -> None:
    with pytest.raises(StoreError):
        index.upsert([Point(id=pid("bad"), vector=[1.0, 2.0], payload={})])


def test_calls_before_ensure_collection_fail_clearly(store: Store) -> None:
    index = store.open()
    with pytest.raises(StoreError, match="ensure_collection"):
        index.count()


# --- not parametrized: factory, secrets, server errors ------------------------------------


def test_open_index_picks_the_kind(tmp_path: Path) -> None:
    edge = open_index(StoreConfig(kind="edge"), StatePaths.under(tmp_path))
    try:
        assert isinstance(edge, EdgeIndex) and isinstance(edge, Index)
        assert edge.path == tmp_path / "store"
    finally:
        edge.close()
    with pytest.raises(StoreError, match="IMGRAG_STORE__URL"):
        open_index(StoreConfig(kind="qdrant", url=""), StatePaths.under(tmp_path))
    server = open_index(
        StoreConfig(kind="qdrant", url="http://127.0.0.1:6333"), StatePaths.under(tmp_path)
    )
    assert isinstance(server, QdrantIndex)
    server.close()


def test_unreachable_server_names_where_and_hides_the_key() -> None:
    secret = "s3cret-key-that-must-not-leak"
    config = StoreConfig(
        kind="qdrant",
        url="http://admin:pw@127.0.0.1:1",  # nothing listens on port 1
        api_key=SecretStr(secret),
        max_attempts=3,
        timeout_seconds=1,
    )
    index = QdrantIndex(config, backoff_seconds=0.01)
    assert secret not in repr(index) and "pw" not in repr(index)
    with pytest.raises(StoreError) as info:
        index.ensure_collection(CollectionSpec(name="x", model="m", dimension=DIM))
    message = str(info.value)
    assert "unreachable" in message and "127.0.0.1:1" in message and "3 attempts" in message
    assert secret not in message and "pw" not in message
    chained: BaseException | None = info.value
    while chained is not None:
        assert secret not in f"{chained!r} {chained}"
        chained = chained.__cause__ or chained.__context__
    assert secret not in repr(config) and secret not in str(config.model_dump())
    index.close()
