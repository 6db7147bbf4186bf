"""Which files are candidates, their change signatures, and sidecar metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from imgrag.pipeline.candidates import Rules, seen, walk
from imgrag.pipeline.config import DEFAULT_INCLUDE
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.sidecars import SidecarError, read_sidecar

RULES = Rules(include=DEFAULT_INCLUDE, exclude=("*/skip/*", "*.raw.png"))


@pytest.mark.parametrize(
    ("rel", "wanted"),
    [
        ("a.jpg", True),
        ("deep/er/B.JPEG", True),
        ("x.heic", True),
        ("notes.txt", False),
        (".hidden.jpg", False),
        (".imgrag/store/x.png", False),
        ("photo.jpg.part", False),
        ("photo.jpg.crdownload", False),
        ("photo.tmp", False),
        ("~$lock.png", False),
        (".DS_Store", False),
        ("dir/skip/a.png", False),
        ("z.raw.png", False),
    ],
)
def test_rules(rel: str, wanted: bool) -> None:
    assert RULES.wants(rel) is wanted


def test_walk_finds_wanted_files_and_stays_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".imgrag").mkdir()
    for rel in ("one.jpg", "a/two.png", "a/b/three.gif", "a/readme.txt", ".imgrag/x.png"):
        (root / rel).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    os.symlink(outside, root / "link-out")
    os.symlink(outside / "secret.jpg", root / "secret-link.jpg")
    os.symlink(root / "one.jpg", root / "a" / "inner-link.jpg")
    found = sorted(s.rel for s in walk(root, RULES))
    assert found == ["a/b/three.gif", "a/inner-link.jpg", "a/two.png", "one.jpg"]
    assert sorted(s.rel for s in walk(root, RULES, below="a/b")) == ["a/b/three.gif"]


def test_sidecar_edits_change_the_signature(tmp_path: Path) -> None:
    img = tmp_path / "p.jpg"
    img.write_bytes(b"x")
    before = seen(tmp_path, "p.jpg", RULES)
    (tmp_path / "p.txt").write_text("a dog on a beach")
    after = seen(tmp_path, "p.jpg", RULES)
    assert before is not None and after is not None
    assert before.sidecar == "" and after.sidecar != ""
    assert [s.sidecar for s in walk(tmp_path, RULES)] == [after.sidecar]
    assert seen(tmp_path, "gone.jpg", RULES) is None


def test_sidecars_caption_tags_and_metadata(tmp_path: Path) -> None:
    img = tmp_path / "p.jpg"
    (tmp_path / "p.txt").write_text("  a red car  \n")
    (tmp_path / "p.json").write_text(json.dumps({"tags": "car, red", "album": "2024"}))
    sidecar, sig = read_sidecar(img)
    assert sidecar.caption == "a red car"
    assert sidecar.tags == ["car", "red"]
    assert sidecar.extra_metadata == {"album": "2024"}
    assert sig
    (tmp_path / "p.json").write_text(json.dumps({"caption": "json wins", "tags": ["x"]}))
    assert read_sidecar(img)[0].caption == "json wins"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"tags": [{"a": 1}]}), "tags"),
        ("x" * 70_000, "over 64 KB"),
    ],
)
def test_bad_sidecars_say_why(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(SidecarError, match=message):
        read_sidecar(tmp_path / "p.jpg")


def test_journal_records_and_forgets(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record("a.jpg", "1:2:", "permanent", "undecodable", "corrupt")
    journal.record("a.jpg", "1:2:", "permanent", "undecodable", "still corrupt")
    journal.record("d/b.jpg", "3:4:", "transient", "embedder_unavailable", "503")
    assert journal.permanent_signature("a.jpg") == ("1:2:", "undecodable")
    assert journal.transient_paths() == ["d/b.jpg"]
    assert journal.by_reason() == {"undecodable": 1, "embedder_unavailable": 1}
    recent = {f.path: f for f in journal.recent()}
    assert recent["a.jpg"].attempts == 2 and recent["a.jpg"].message == "still corrupt"
    journal.clear_folder("d")
    assert journal.transient_paths() == []
    assert journal.clear_permanent() == 1
    assert journal.count() == 0
    journal.close()
