"""Deterministic identities: point ids, content hashes and embedding keys."""

from __future__ import annotations

import hashlib
import os
import uuid

_NAMESPACE = uuid.UUID("6f1c2f1e-4f7a-4d8e-9a57-3b1c0f9e2a10")


def point_id(source: str, rel_path: str) -> str:
    """uuid5 of the source and the relative path: re-running never duplicates a point.

    The path is taken as the bytes the OS holds (surrogateescape), so any name has an id;
    for UTF-8 names these are the same ids as always.
    """
    name = source.encode("utf-8", "surrogateescape") + b"\x00" + os.fsencode(rel_path)
    # uuid.uuid5 over bytes (it only takes str before Python 3.12).
    digest = hashlib.sha1(_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def embed_key(
    sha256: str, caption: str | None, model: str, input_type: str, dimensions: int
) -> str:
    """Everything that determines a vector; equal keys mean the stored vector can be reused."""
    parts = (sha256, caption or "", model, input_type, str(dimensions))
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
