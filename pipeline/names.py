"""File names three ways: as the disk holds them, as the index stores them, as people read them.

A POSIX name is any bytes but NUL and ``/``. Python hands bytes that are not UTF-8 over as
lone surrogates (surrogateescape), which neither a JSON payload nor SQLite text can hold.
Such a name is *stored* in an escaped form, each undecodable byte as ``\\xHH`` and each
backslash doubled, which maps back to the exact bytes on disk. A valid UTF-8 name is stored
as it is, so nearly every name looks the same everywhere.

*Printed* names (logs, ``imgrag status``) escape control characters too, so a name holding
a newline cannot forge a line.
"""

from __future__ import annotations

import os
import re

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def is_plain(name: str) -> bool:
    """True when the name is valid UTF-8 text (no surrogate-escaped bytes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stored(disk_rel: str) -> str:
    """The form the index, the journal and payloads keep for a path read from the disk."""
    if is_plain(disk_rel):
        return disk_rel
    raw = os.fsencode(disk_rel).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", "backslashreplace")


def on_disk(rel: str) -> str:
    """The path on disk that ``stored`` turned into ``rel`` (``rel`` itself for plain names).

    A stored name that would decode to valid UTF-8 was never escaped, so it is taken as
    written: ``a\\x41.jpg`` names the file with that literal backslash.
    """
    if "\\" not in rel:
        return rel
    pieces: list[bytes] = []
    last = 0
    for match in _ESCAPE.finditer(rel):
        literal = rel[last : match.start()]
        if "\\" in literal:
            return rel  # a lone backslash: not something stored() wrote
        pieces.append(literal.encode("utf-8", "surrogateescape"))
        token = match.group(1)
        pieces.append(b"\\" if token == "\\" else bytes([int(token[1:], 16)]))
        last = match.end()
    tail = rel[last:]
    if "\\" in tail:
        return rel
    pieces.append(tail.encode("utf-8", "surrogateescape"))
    raw = b"".join(pieces)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return os.fsdecode(raw)
    return rel


def printable(text: str) -> str:
    """``text`` safe for one line of a terminal or a log: control and separator characters
    (newlines, escape sequences, U+2028, lone surrogates) are written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    code = ord(c)
    if c in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
