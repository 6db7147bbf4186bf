"""Reconcile passes over real folders: nothing lost, nothing embedded twice."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from imgrag import CollectionMismatch, CredentialError, FatalError
from imgrag.connectors.emulator import EmulatorHandle
from imgrag.connectors.index import Point
from imgrag.pipeline.runtime import open_runtime

from tests import images_factory as f
from tests.ingest_harness import pipeline, settings_for


def add(root: Path, rel: str, seed: int) -> Path:
    return f.save(f.photo(seed), root / rel, "PNG")


async def test_new_files_are_indexed_then_unchanged_costs_nothing(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "a.png", 1)
        add(p.root, "sub/b.png", 2)
        first = await p.ingestor.reconcile()
        assert (first.indexed, first.failed) == (2, 0)
        assert first.requests == 2 and first.tokens == 2000
        again = await p.ingestor.reconcile()
        assert (again.indexed, again.unchanged, again.requests) == (0, 2, 0)
        payload = p.points()["sub/b.png"]
        assert payload["folder"] == "sub" and payload["filename"] == "b.png"
        assert payload["input_type"] == "document" and payload["model"] == "Cohere-embed-v3-english"
        assert payload["width"] == 96 and payload["format"] == "png"
        assert len(str(payload["sha256"])) == 64


async def test_same_image_under_two_names_is_embedded_once(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "one.png", 7)
        shutil.copy(p.root / "one.png", p.root / "copy.png")
        summary = await p.ingestor.reconcile()
        assert summary.indexed + summary.reused == 2
        assert p.embed_calls() == 1
        assert p.paths() == ["copy.png", "one.png"]


async def test_move_reuses_the_vector_and_drops_the_old_path(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "old/x.png", 3)
        await p.ingestor.reconcile()
        calls = p.embed_calls()
        (p.root / "new").mkdir()
        os.rename(p.root / "old" / "x.png", p.root / "new" / "y.png")
        summary = await p.ingestor.reconcile()
        assert (summary.reused, summary.removed, summary.indexed) == (1, 1, 0)
        assert p.embed_calls() == calls
        assert p.paths() == ["new/y.png"]


async def test_overwrite_reembeds_and_delete_removes(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "a.png", 1)
        add(p.root, "b.png", 2)
        await p.ingestor.reconcile()
        before = p.points()["a.png"]["sha256"]
        add(p.root, "a.png", 9)
        (p.root / "b.png").unlink()
        summary = await p.ingestor.reconcile()
        assert (summary.indexed, summary.removed) == (1, 1)
        assert p.paths() == ["a.png"]
        assert p.points()["a.png"]["sha256"] != before


async def test_directory_move_and_delete(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with pipeline(tmp_path, emulator) as p:
        for i in range(3):
            add(p.root, f"trip/day{i}.png", 10 + i)
        add(p.root, "keep/k.png", 20)
        await p.ingestor.reconcile()
        calls = p.embed_calls()
        os.rename(p.root / "trip", p.root / "holiday")
        moved = await p.ingestor.reconcile()
        assert (moved.reused, moved.removed) == (3, 3)
        assert p.embed_calls() == calls
        shutil.rmtree(p.root / "holiday")
        gone = await p.ingestor.reconcile()
        assert gone.removed == 3
        assert p.paths() == ["keep/k.png"]


async def test_bad_files_fail_with_reasons_and_good_ones_are_indexed(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "good.png", 1)
        (p.root / "zero.jpg").write_bytes(b"")
        (p.root / "text.jpg").write_text("not an image, just text")
        f.corrupt_jpeg(p.root / "truncated.jpg")
        f.decompression_bomb(p.root / "bomb.png")
        summary = await p.ingestor.reconcile()
        assert summary.indexed == 1
        assert summary.failed_by_reason == {"empty": 1, "undecodable": 2, "too_large": 1}
        assert p.paths() == ["good.png"]
        reasons = {x.path: x.reason for x in p.runtime.journal.recent()}
        assert reasons["bomb.png"] == "too_large" and reasons["zero.jpg"] == "empty"
        # not retried while unchanged...
        again = await p.ingestor.reconcile()
        assert again.failed == 4 and p.embed_calls() == 1
        # ...but retried once the file changes
        add(p.root, "text.jpg", 5)
        fixed = await p.ingestor.reconcile()
        assert fixed.indexed == 1 and "text.jpg" in p.paths()
        assert "text.jpg" not in {x.path for x in p.runtime.journal.recent()}


async def test_awkward_formats_are_indexed(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with pipeline(tmp_path, emulator) as p:
        f.cmyk_jpeg(p.root / "cmyk.jpg")
        f.png16(p.root / "deep.png")
        f.palette_png_with_transparency(p.root / "palette.png")
        f.animated_gif(p.root / "anim.gif")
        f.exif_rotated_jpeg(p.root / "rotated.jpg")
        summary = await p.ingestor.reconcile()
        assert (summary.indexed, summary.failed) == (5, 0)
        rotated = p.points()["rotated.jpg"]
        assert (rotated["width"], rotated["height"]) == (60, 120)
        assert rotated["taken_at"] == "2024-05-17T10:30:00"
        assert rotated["camera"] == "Acme Cam 3"


async def test_sidecar_caption_tags_and_edits(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "dog.png", 4)
        (p.root / "dog.txt").write_text("a dog on the beach")
        (p.root / "dog.json").write_text('{"tags": ["beach", "dog"], "album": "summer"}')
        await p.ingestor.reconcile()
        payload = p.points()["dog.png"]
        assert payload["caption"] == "a dog on the beach"
        assert payload["tags"] == ["beach", "dog"] and payload["meta"] == {"album": "summer"}
        # Cohere v3 takes no image+text pair: the caption is stored, not embedded
        assert payload["caption_embedded"] is False
        assert [r.text_inputs for r in p.emulator.state.requests if r.route == "images"] == [[]]
        again = await p.ingestor.reconcile()
        assert (again.unchanged, again.reused, again.indexed) == (1, 0, 0)  # a stat, no rewrite
        (p.root / "dog.json").write_text('{"tags": ["sunset"]}')
        summary = await p.ingestor.reconcile()
        assert summary.unchanged + summary.reused + summary.indexed == 1
        assert p.points()["dog.png"]["tags"] == ["sunset"]
        assert p.embed_calls() == 1  # the caption did not change what was embedded
        await p.ingestor.load_state()  # as a restart would: the sidecar signature is stored
        assert (await p.ingestor.reconcile()).unchanged == 1


def _retag(root: Path) -> None:
    (root / "dog.json").write_text('{"tags": ["sunset"]}')


def _touch(root: Path) -> None:
    st = (root / "dog.png").stat()  # same bytes, an older mtime (settled at once)
    os.utime(root / "dog.png", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))


@pytest.mark.parametrize("change", [_retag, _touch], ids=["sidecar_tags", "mtime_only"])
async def test_a_rewritten_point_keeps_its_own_stored_vector(
    tmp_path: Path, emulator: EmulatorHandle, change: Callable[[Path], None]
) -> None:
    """A change that rewrites the point but not what was embedded (the embed key) keeps the
    point's own stored vector: no request, and not the vector of another point that carries
    the same embed key (say a copy written under an earlier revision of the same model)."""
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "dog.png", 4)
        (p.root / "dog.json").write_text('{"tags": ["beach"]}')
        assert (await p.ingestor.reconcile()).indexed == 1
    async with pipeline(tmp_path, emulator) as p:  # a restart: no vector held in memory
        index = p.runtime.index
        (state,) = list(index.file_states())
        assert state.embed_key is not None
        own = index.vector_by_id(state.id)
        assert own is not None
        other = [-x for x in own]
        index.upsert(
            [Point(id=str(uuid.UUID(int=0)), vector=other, payload={"embed_key": state.embed_key})]
        )
        # the lookup by embed key now finds the other point first
        assert index.vector_by_embed_key(state.embed_key) == pytest.approx(other, abs=1e-6)
        change(p.root)
        summary = await p.ingestor.reconcile()
        assert (summary.reused, summary.indexed, summary.unchanged) == (1, 0, 0)
        assert summary.requests == 0 and p.embed_calls() == 0
        assert p.points()["dog.png"]["mtime_ns"] == (p.root / "dog.png").stat().st_mtime_ns
        assert index.vector_by_id(state.id) == own


async def test_outage_loses_nothing(tmp_path: Path, emulator: EmulatorHandle) -> None:
    async with pipeline(tmp_path, emulator) as p:
        for i in range(4):
            add(p.root, f"p{i}.png", 30 + i)
        emulator.state.options.fail_rate = 1.0
        down = await p.ingestor.reconcile()
        assert down.indexed == 0 and down.failed_by_reason == {"embedder_unavailable": 4}
        assert down.pending == 4
        assert sorted(p.runtime.journal.transient_paths()) == [f"p{i}.png" for i in range(4)]
        emulator.state.options.fail_rate = 0.0
        up = await p.ingestor.reconcile()
        assert (up.indexed, up.failed) == (4, 0)
        assert p.paths() == [f"p{i}.png" for i in range(4)]
        assert p.runtime.journal.count() == 0


async def test_wrong_key_stops_before_any_work_with_one_line(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        add(p.root, "a.png", 1)
    settings = settings_for(tmp_path, emulator, key="wrong-key-123")
    with pytest.raises(CredentialError) as info:
        async with open_runtime(settings):
            pass
    message = str(info.value)
    assert "\n" not in message and "AZURE_INFERENCE_CREDENTIAL" in message
    assert "wrong-key-123" not in message
    assert [r.status for r in emulator.state.requests] == [401]  # the probe, nothing more


async def test_a_key_revoked_mid_run_stops_the_run(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator) as p:
        for i in range(3):
            add(p.root, f"p{i}.png", i)
        emulator.state.inject(401, count=10)
        with pytest.raises(FatalError, match="AZURE_INFERENCE_CREDENTIAL"):
            await p.ingestor.reconcile()
        assert p.runtime.journal.count() == 0  # files are not blamed for a bad key


async def test_collection_made_by_another_model_is_refused(
    tmp_path: Path, emulator: EmulatorHandle, v4_emulator: EmulatorHandle
) -> None:
    async with pipeline(tmp_path, emulator):
        pass
    settings = settings_for(tmp_path, v4_emulator, model="embed-v-4-0")
    with pytest.raises(CollectionMismatch) as info:
        async with open_runtime(settings):
            pass
    assert "Cohere-embed-v3-english" in str(info.value) and "embed-v-4-0" in str(info.value)


async def test_future_dated_and_oversized_files(
    tmp_path: Path, emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setattr("imgrag.pipeline.source_folder.MAX_FILE_BYTES", 20_000)
    async with pipeline(tmp_path, emulator) as p:
        future = add(p.root, "future.png", 1)
        later = time.time() + 86_400  # a camera whose clock is a day ahead
        os.utime(future, (later, later))
        big = p.root / "huge.png"
        f.save(f.big_noisy_photo((400, 300)), big, "PNG")
        assert big.stat().st_size > 20_000
        summary = await p.ingestor.reconcile()
        assert summary.indexed == 1 and summary.failed_by_reason == {"too_large": 1}
        assert p.paths() == ["future.png"]
