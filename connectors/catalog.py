"""Known facts about Azure AI Foundry embedding models, shared by the client and the emulator."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024
MAX_REQUEST_BYTES = 20 * 1000 * 1000
"""Cohere documents about 20 MB per request; larger bodies are refused with 413."""


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a deployed model accepts. Unknown models start from config and learn at run time."""

    name: str
    dimension: int
    allowed_dimensions: tuple[int, ...]
    max_images_per_request: int
    supports_input_type: bool
    supports_image_text: bool
    tokens_per_image: int = 1000
    """Tokens billed per image; for models that bill by pixels, the cost of a 512x512 image."""
    pixel_priced: bool = False
    """Whether the image cost grows with its pixel count (Cohere embed v4)."""
    max_image_bytes: int = 5 * MB
    max_request_bytes: int = MAX_REQUEST_BYTES
    max_text_tokens: int = 512
    provider: str = "Cohere"
    emulator_only: bool = False


_MODELS = (
    ModelFacts("Cohere-embed-v3-english", 1024, (1024,), 1, True, False),
    ModelFacts("Cohere-embed-v3-multilingual", 1024, (1024,), 1, True, False),
    # Cohere prices v4 images by pixels: about 1,610 tokens for 512x512.
    ModelFacts(
        "embed-v-4-0",
        1536,
        (256, 512, 1024, 1536),
        96,
        True,
        True,
        tokens_per_image=1610,
        pixel_priced=True,
    ),
    # Stands for deployments that reject input_type with 422; served only by the emulator.
    ModelFacts(
        "emulator-no-input-type",
        1024,
        (1024,),
        1,
        False,
        False,
        provider="Emulator",
        emulator_only=True,
    ),
)

CATALOG: dict[str, ModelFacts] = {m.name.lower(): m for m in _MODELS}


def lookup(model: str) -> ModelFacts | None:
    """Facts for a model name (case-insensitive), or None when it is not known."""
    return CATALOG.get(model.lower())
