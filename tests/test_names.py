"""Names as the disk holds them, as the index stores them, as people read them."""

from __future__ import annotations

import os
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from imgrag.pipeline.keys import point_id
from imgrag.pipeline.names import is_plain, on_disk, printable, stored

# A POSIX name: any bytes but NUL and "/"; a relative path: names joined by "/".
names = st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00" not in b and b"/" not in b)
paths = st.lists(names, min_size=1, max_size=3).map(lambda parts: b"/".join(parts))


@settings(max_examples=50)
@given(paths)
def test_any_name_is_stored_as_text_and_maps_back_to_its_bytes(raw: bytes) -> None:
    disk = os.fsdecode(raw)
    rel = stored(disk)
    rel.encode("utf-8")  # storable in a payload and in SQLite
    assert on_disk(rel) == disk
    assert os.fsencode(on_disk(rel)) == raw
    if is_plain(disk):
        assert rel == disk  # valid UTF-8 names are stored as they are


@settings(max_examples=50)
@given(paths, paths)
def test_distinct_undecodable_names_are_stored_distinctly(a: bytes, b: bytes) -> None:
    """Among names that are not UTF-8 the stored form is one-to-one. (One of them can meet
    a UTF-8 name spelled like its escape; walk() then skips it with a warning.)"""
    da, db = os.fsdecode(a), os.fsdecode(b)
    if a != b and not is_plain(da) and not is_plain(db):
        assert stored(da) != stored(db)


def test_stored_forms_of_odd_names() -> None:
    assert stored(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert stored(os.fsdecode(b"a\\b\xff.png")) == "a\\\\b\\xff.png"  # backslash doubled
    assert stored("line\nbreak.png") == "line\nbreak.png"
    assert on_disk("a\\x41.jpg") == "a\\x41.jpg"  # decodes to UTF-8: a literal name


@settings(max_examples=50)
@given(st.text())
def test_printable_text_is_one_line_without_control_characters(text: str) -> None:
    out = printable(text)
    assert out.isprintable()
    assert "\n" not in out and "\r" not in out and "\x1b" not in out


def test_point_ids_come_from_the_raw_bytes_and_keep_their_old_values() -> None:
    namespace = uuid.UUID("6f1c2f1e-4f7a-4d8e-9a57-3b1c0f9e2a10")
    for rel in ("a.jpg", "ünï/çødé.png", "line\nbreak.png"):
        assert point_id("src", rel) == str(uuid.uuid5(namespace, f"src\x00{rel}"))
    odd = point_id("src", os.fsdecode(b"caf\xe9.png"))
    assert odd != point_id("src", os.fsdecode(b"caf\xe8.png"))
    assert uuid.UUID(odd).version == 5
