"""Which files are candidates, their change signatures, and sidecar metadata."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from imgrag import SidecarError
from imgrag.pipeline.candidates import Rules, seen, walk
from imgrag.pipeline.config import DEFAULT_INCLUDE
from imgrag.pipeline.journal import Journal
from imgrag.pipeline.names import stored
from imgrag.pipeline.sidecars import read_sidecar

from tests import hostile_factory as h

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


# -- safe reads: what a sidecar may not be ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"v": NaN}', "NaN"),
        ('{"v": -Infinity}', "Infinity"),
        ('{"v": 1e400}', "too large"),
        ('{"v": 123456789012345678901234567890}', "64-bit"),
        ("[" * 30_000 + "]" * 30_000, "nests deeper"),
        ('{"a": ' * 40 + "1" + "}" * 40, "nests deeper"),
        ('{"v": "\\ud800"}', "not valid Unicode"),
    ],
    ids=["nan", "infinity", "overflow", "bigint", "deep-30000", "deep-40", "lone-surrogate"],
)
def test_json_sidecars_are_parsed_with_limits(tmp_path: Path, content: str, message: str) -> None:
    """Issue findings: NaN poisoned the upsert batch (TypeError), 30,000 nested [ raised
    RecursionError. Each is now bad_sidecar, said in one line."""
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(SidecarError, match=message) as info:
        read_sidecar(tmp_path / "p.jpg")
    assert "\n" not in str(info.value)


def test_sidecar_linked_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    """Issue finding: photo.txt → /etc/passwd was read and stored as the caption."""
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the secret caption")
    os.symlink(secret, root / "p.txt")
    with pytest.raises(SidecarError, match="outside the folder") as info:
        read_sidecar(root / "p.jpg", root)
    assert "secret caption" not in str(info.value)
    os.symlink("/dev/zero", root / "z.txt")
    with pytest.raises(SidecarError):
        read_sidecar(root / "z.jpg", root)
    inside = root / "captions" / "q.txt"
    inside.parent.mkdir()
    inside.write_text("a link that stays inside")
    os.symlink(inside, root / "q.txt")
    assert read_sidecar(root / "q.jpg", root)[0].caption == "a link that stays inside"


def _in_thread(fn: Callable[[], object], unblock: Callable[[], None]) -> BaseException | object:
    """Run ``fn`` in a thread; if it has not returned within 10 s, call ``unblock`` (so the
    thread can end) and fail: the call blocked."""
    result: list[BaseException | object] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():
        unblock()
        thread.join(timeout=10)
        pytest.fail("the read blocked")
    return result[0]


def test_fifo_sidecar_never_blocks(tmp_path: Path) -> None:
    """Issue finding: a FIFO sidecar hung the pass (open waits for a writer)."""
    fifo = h.fifo(tmp_path / "p.txt")

    def unblock() -> None:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    outcome = _in_thread(lambda: read_sidecar(tmp_path / "p.jpg"), unblock)
    assert isinstance(outcome, SidecarError) and "FIFO" in str(outcome)


def test_device_and_huge_sidecars_are_refused_before_reading(tmp_path: Path) -> None:
    """Issue finding: /dev/zero as a sidecar exhausted memory, because the 64 KB limit was
    checked after reading. The refusal reads nothing (the process's read counter)."""
    io_file = Path("/proc/self/io")
    if not io_file.exists():
        pytest.skip("needs /proc/self/io (Linux) to count the bytes read")

    def bytes_read() -> int:
        line = next(x for x in io_file.read_text().splitlines() if x.startswith("rchar:"))
        return int(line.split()[1])

    with (tmp_path / "p.json").open("wb") as fh:
        fh.truncate(10 * 1024 * 1024)  # 10 MB (sparse)
    before = bytes_read()
    with pytest.raises(SidecarError, match="over 64 KB"):
        read_sidecar(tmp_path / "p.jpg")
    assert bytes_read() - before < 1024 * 1024
    device = h.char_device_zero(tmp_path / "z.txt")
    if device is None:
        pytest.skip("creating a device node (like /dev/zero) in the folder needs root")
    with pytest.raises(SidecarError, match="device"):
        read_sidecar(tmp_path / "z.jpg")


# -- walking: links that loop, names that are not text -----------------------------------


def test_symlink_loops_and_links_to_a_parent_never_raise(tmp_path: Path) -> None:
    """Issue finding: a symlink loop raised RuntimeError, a link to a parent folder ELOOP."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "real.jpg").write_bytes(b"x")
    h.symlink_loop(root / "a")
    os.symlink(root, root / "a" / "to-root")
    found = sorted(s.rel for s in walk(root, RULES))
    assert "a/real.jpg" in found and all(f.count("/") <= 3 for f in found)
    assert not [f for f in found if "loop" in f]
    assert seen(root, "a/loop-a.jpg", RULES) is None
    through_link = seen(root, "a/up/a/real.jpg", RULES)  # a link to a parent: no error
    assert through_link is not None and through_link.size == 1


def test_odd_names_are_candidates_under_their_stored_form(tmp_path: Path) -> None:
    paths = h.odd_name_paths(tmp_path)
    found = {s.rel: s for s in walk(tmp_path, RULES)}
    assert len(found) == len(paths)
    for rel, s in found.items():
        rel.encode("utf-8")  # storable text, whatever the bytes on disk
        assert (tmp_path / s.disk).exists()
        again = seen(tmp_path, rel, RULES)
        assert again is not None and again.disk == s.disk and again.signature == s.signature
    assert "caf\\xe9-\\xff.png" in found
    assert "line\nERROR forged log line.png" in found  # valid UTF-8: stored as it is


def test_journal_takes_any_message(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.record("a.jpg", "1:2:", "permanent", "unreadable", "cannot open caf\udce9.jpg")
    assert journal.recent()[0].message == "cannot open caf\\udce9.jpg"
    journal.close()


def test_a_link_to_the_root_is_not_followed_from_a_subfolder_walk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "top.jpg").write_bytes(b"x")
    os.symlink(root, root / "a" / "up")
    assert [s.rel for s in walk(root, RULES, below="a")] == []
    assert [s.rel for s in walk(root, RULES, below="a/up")] == []  # the root, by a link
    assert [s.rel for s in walk(root, RULES)] == ["top.jpg"]


@pytest.mark.parametrize(
    "rules",
    [
        Rules(include=(*DEFAULT_INCLUDE, "docs/*.txt"), exclude=("*/skip/*", "*.raw.png")),
        Rules(include=DEFAULT_INCLUDE),  # endings only: the walk's quickest way
        Rules(include=("*.JPG", "*notes.txt", "*.tmp")),  # a partial-download ending too
    ],
)
def test_walk_answers_as_rules_wants_for_every_name(tmp_path: Path, rules: Rules) -> None:
    """The walk decides plain names in a folder without calling ``Rules.wants`` per file;
    its answers must be the same for every kind of name, odd bytes and globs on the path
    and on the name included."""
    names = [
        "a.jpg", "B.JPEG", ".hidden.jpg", "photo.jpg.part", "x.TMP", "~$lock.png",
        ".DS_Store", "Thumbs.db", "z.raw.png", "Z.RAW.PNG", "notes.txt", "ΣΑΣ.png", "x.jpg.tmp",
        "caf\u00e9.webp", "tab\tname.gif",
    ]  # fmt: skip
    folders = ["", "sub/", "sub/skip/", "docs/", "Skip/deeper/", "caf\u00e9/"]
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (tmp_path / folder / name).write_bytes(b"x")
    (tmp_path / "odd").mkdir()
    h.odd_name_paths(tmp_path / "odd")
    expected = set()
    for parent, dirs, files in os.walk(tmp_path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            disk = os.path.relpath(os.path.join(parent, name), tmp_path).replace(os.sep, "/")
            rel = stored(disk)
            if rules.wants(rel):
                expected.add(rel)
    found = {s.rel for s in walk(tmp_path, rules)}
    assert found == expected
    assert "sub/a.jpg" in found and "sub/x.TMP" not in found and "sub/.hidden.jpg" not in found
