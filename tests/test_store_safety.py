"""Opening a damaged embedded store never deletes data: a blank or dangling ``CURRENT``
recovers the newest complete generation, a lost ``collection.json`` is rebuilt only from
points of the same model, and anything else stops with one line. Real qdrant-edge shards."""

from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path

import pytest
from imgrag import StoreError
from imgrag.connectors.index import CollectionSpec, Point
from imgrag.connectors.stores import EdgeIndex
from imgrag.connectors.stores.schema import CollectionRecord

DIM = 8
SPEC = CollectionSpec(name="images", model="model-a", dimension=DIM)
N = 40


def vector(i: int) -> list[float]:
    v = [math.sin(i * (k + 1)) + 1.5 for k in range(DIM)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def pid(i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"safety/{i}"))


def filled_store(tmp_path: Path, model: str = "model-a") -> Path:
    """A closed store holding N points made by ``model``; returns the collection folder."""
    store = tmp_path / "store"
    with EdgeIndex(store) as index:
        index.ensure_collection(SPEC.model_copy(update={"model": model}))
        index.upsert(
            [
                Point(id=pid(i), vector=vector(i), payload={"path": f"p{i}.jpg", "model": model})
                for i in range(N)
            ]
        )
    return store / "images"


def files(folder: Path) -> set[str]:
    """The data files (the engine drops its own empty journals when it opens a shard)."""
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "tracker_journal.dat"
    }


def restore_record(collection: Path, model: str) -> None:
    record = CollectionRecord(model=model, dimension=DIM)
    (collection / "collection.json").write_text(record.model_dump_json())


def assert_serves_everything(store: Path) -> None:
    with EdgeIndex(store) as index:
        index.ensure_collection(SPEC)
        assert index.count() == N
        hits = index.search(vector(7), limit=1)
        assert hits[0].id == pid(7)


def one_line_error(store: Path) -> str:
    with EdgeIndex(store) as index, pytest.raises(StoreError) as caught:
        index.ensure_collection(SPEC)
    message = str(caught.value)
    assert "\n" not in message and "nothing was deleted" in message
    return message


@pytest.mark.parametrize("current", ["", "\n", "garbage"])
def test_blank_current_recovers_the_generation(tmp_path: Path, current: str) -> None:
    collection = filled_store(tmp_path)
    (collection / "CURRENT").write_text(current)
    assert_serves_everything(tmp_path / "store")
    assert (collection / "CURRENT").read_text() == "gen-000001"  # repaired


def test_missing_current_file_recovers_the_generation(tmp_path: Path) -> None:
    collection = filled_store(tmp_path)
    (collection / "CURRENT").unlink()
    assert_serves_everything(tmp_path / "store")


def test_current_naming_a_missing_generation_keeps_the_good_one(tmp_path: Path) -> None:
    collection = filled_store(tmp_path)
    (collection / "CURRENT").write_text("gen-000007")
    assert_serves_everything(tmp_path / "store")
    assert (collection / "gen-000001").is_dir()


def test_recovery_picks_the_newest_complete_generation(tmp_path: Path) -> None:
    collection = filled_store(tmp_path)
    # An older, complete copy with fewer points, and a newer folder that is not a shard.
    shutil.copytree(collection / "gen-000001", collection / "gen-000003")
    shutil.move(collection / "gen-000001", collection / "gen-000002")
    (collection / "gen-000009").mkdir()
    (collection / "gen-000009" / "junk").write_text("half a copy")
    (collection / "CURRENT").write_text("gen-000042")
    assert_serves_everything(tmp_path / "store")
    assert (collection / "CURRENT").read_text() == "gen-000003"
    # Nothing was deleted by the recovery, not even the folder that is not a shard.
    assert {"gen-000002", "gen-000003", "gen-000009"} <= {p.name for p in collection.iterdir()}


def test_no_complete_generation_is_one_line_and_deletes_nothing(tmp_path: Path) -> None:
    collection = filled_store(tmp_path)
    config = (collection / "gen-000001" / "edge_config.json").read_bytes()
    (collection / "gen-000001" / "edge_config.json").unlink()
    (collection / "CURRENT").write_text("")
    before = files(collection)
    message = one_line_error(tmp_path / "store")
    assert "CURRENT is blank" in message and "move" in message
    assert files(collection) == before
    (collection / "gen-000001" / "edge_config.json").write_bytes(config)
    assert_serves_everything(tmp_path / "store")  # the points were never touched


def test_missing_collection_json_is_rebuilt_from_points_of_the_same_model(
    tmp_path: Path,
) -> None:
    collection = filled_store(tmp_path)
    (collection / "collection.json").unlink()
    assert_serves_everything(tmp_path / "store")
    assert '"model": "model-a"' in (collection / "collection.json").read_text()


def test_missing_collection_json_with_another_models_points_deletes_nothing(
    tmp_path: Path,
) -> None:
    collection = filled_store(tmp_path, model="model-b")
    (collection / "collection.json").unlink()
    before = files(collection)
    message = one_line_error(tmp_path / "store")
    assert "model-b" in message and "IMGRAG_STORE__COLLECTION" in message
    assert files(collection) == before
    assert not (collection / "collection.json").exists()
    restore_record(collection, "model-b")  # what was there is all still there
    with EdgeIndex(tmp_path / "store") as index:
        index.ensure_collection(SPEC.model_copy(update={"model": "model-b"}))
        assert index.count() == N


def test_missing_collection_json_with_another_dimension_deletes_nothing(
    tmp_path: Path,
) -> None:
    collection = filled_store(tmp_path)
    (collection / "collection.json").unlink()
    before = files(collection)
    with EdgeIndex(tmp_path / "store") as index, pytest.raises(StoreError) as caught:
        index.ensure_collection(SPEC.model_copy(update={"dimension": 16}))
    assert "8 dimensions, not 16" in str(caught.value) and "\n" not in str(caught.value)
    assert files(collection) == before


def test_leftovers_go_only_once_current_opened(tmp_path: Path) -> None:
    collection = filled_store(tmp_path)
    shutil.copytree(collection / "gen-000001", collection / "gen-000002.building")
    shutil.copytree(collection / "gen-000001", collection / "gen-000002")
    assert_serves_everything(tmp_path / "store")
    assert sorted(p.name for p in collection.iterdir() if p.name.startswith("gen-")) == [
        "gen-000001"
    ]
