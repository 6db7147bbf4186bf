"""Deterministic identities: point ids, content hashes and embedding keys."""

from __future__ import annotations

import hashlib
import uuid

_NAMESPACE = uuid.UUID("6f1c2f1e-4f7a-4d8e-9a57-3b1c0f9e2a10")


def point_id(source: str, rel_path: str) -> str:
    """uuid5 of the source and the relative path: re-running never duplicates a point."""
    return str(uuid.uuid5(_NAMESPACE, f"{source}\x00{rel_path}"))


def embed_key(
    sha256: str, caption: str | None, model: str, input_type: str, dimensions: int
) -> str:
    """Everything that determines a vector; equal keys mean the stored vector can be reused."""
    parts = (sha256, caption or "", model, input_type, str(dimensions))
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
