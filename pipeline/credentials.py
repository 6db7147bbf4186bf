"""An embedder whose credential can be renewed while the daemon runs.

When the service starts refusing the key (a rotated or revoked key), the daemon re-reads
the settings and swaps in an embedder built with the new key, without a restart. Usage
counters carry over so status and metrics never go backwards.
"""

from __future__ import annotations

from collections.abc import Sequence

from imgrag.connectors.embedder import (
    Embedder,
    EmbedderInfo,
    Embedding,
    ImageInput,
    InputType,
    Usage,
)


class RenewableEmbedder:
    """Delegates to one embedder at a time; ``replace`` swaps it for a fresh one."""

    def __init__(self, inner: Embedder, key: object = None) -> None:
        self.inner = inner
        self.key = key
        """The credential ``inner`` was made with (compared, never shown)."""
        self._retired = Usage()
        self._owned: list[Embedder] = []

    @property
    def info(self) -> EmbedderInfo:
        return self.inner.info

    @property
    def usage(self) -> Usage:
        return self._sum(self._retired, self.inner.usage)

    async def embed_images(
        self, items: Sequence[ImageInput], input_type: InputType
    ) -> list[Embedding]:
        return await self.inner.embed_images(items, input_type)

    async def embed_texts(self, texts: Sequence[str], input_type: InputType) -> list[Embedding]:
        return await self.inner.embed_texts(texts, input_type)

    async def probe(self) -> EmbedderInfo:
        """Check the current embedder answers (raises what the service says)."""
        return await self.inner.probe()

    def replace(self, fresh: Embedder) -> None:
        """Use ``fresh`` from now on; the previous one is closed by ``aclose``."""
        self._retired = self._sum(self._retired, self.inner.usage)
        self.inner = fresh
        self._owned.append(fresh)

    async def swap(self, fresh: Embedder, key: object) -> None:
        """Use ``fresh``, made with ``key``; a replaced one this wrapper made is closed now."""
        old = self.inner
        self.replace(fresh)
        self.key = key
        if old in self._owned:
            self._owned.remove(old)
            await old.aclose()

    @staticmethod
    def _sum(a: Usage, b: Usage) -> Usage:
        summed: dict[str, object] = {
            n: getattr(a, n) + getattr(b, n)
            for n in Usage.model_fields
            if isinstance(getattr(b, n), int | float)
        }
        summed["deployments"] = b.deployments  # a pool's live view, not a sum
        return a.model_copy(update=summed)

    async def aclose(self) -> None:
        """Close the embedders this wrapper made (the first one belongs to its opener)."""
        for embedder in self._owned:
            await embedder.aclose()
        self._owned.clear()
