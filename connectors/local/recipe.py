"""The ConSE recipe: which prompts form the class bank and how the parts are weighted.

Every number here was chosen by ``bench/local_sweep.py``; changing any of them changes
the vectors, so the recipe version (part of the model name) must change with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MODEL_PREFIX = "imgrag-local-conse"

NameSource = Literal["clean", "wordnet", "first"]

BASIC_COLOURS: tuple[str, ...] = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
)


class ConseRecipe(BaseModel):
    """How an image becomes a point in the MiniLM text space."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(default=1, ge=1)
    top_k: int = Field(default=50, ge=1, le=1000)
    """How many of the most probable ImageNet classes are combined."""
    temperature: float = Field(default=3.0, gt=0)
    """Softmax temperature applied to the logits before the top-k combination."""
    name_source: NameSource = "first"
    """clean: curated names; wordnet: every WordNet synonym; first: the first synonym."""
    templates: tuple[str, ...] = ("a photo of a {}.",)
    """Prompt templates; a class embedding is the normalized mean over templates."""
    colour_template: str = "the color {}"
    colours: tuple[str, ...] = BASIC_COLOURS
    colour_top: int = Field(default=3, ge=1)
    """How many dominant colours of an image enter its colour term."""
    colour_weight: float = Field(default=0.3, ge=0)
    """Weight of the colour term against the (unit) class term."""
    caption_weight: float = Field(default=0.3, ge=0, le=1)
    """Share of the caption in an image+text embedding (the image gets the rest)."""

    def prompt_fingerprint(self) -> str:
        """Short hash of everything that decides which texts the banks embed."""
        spec = {
            "name_source": self.name_source,
            "templates": list(self.templates),
            "colour_template": self.colour_template,
            "colours": list(self.colours),
        }
        return _digest(spec)

    def fingerprint(self) -> str:
        """Short hash of the whole recipe (prompts and weights)."""
        return _digest(self.model_dump(mode="json"))

    @property
    def model_name(self) -> str:
        """The model name recorded with every collection built from this recipe.

        The default recipe is ``imgrag-local-conse-v<version>``; any other recipe carries
        its fingerprint so its vectors are never mixed with the default's.
        """
        base = f"{MODEL_PREFIX}-v{self.version}"
        if self == DEFAULT_RECIPE:
            return base
        return f"{base}-{self.fingerprint()}"


def _digest(obj: object) -> str:
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


# Chosen by bench/local_sweep.py over 8,694 recipes: k=50 with temperature 3 (a broad,
# smoothed mix of classes) beat ConSE's usual k=10 at T=1 by +0.13 text MRR and made
# augmented copies find their original every time; first WordNet synonyms beat curated
# and full-synonym names; one template scored within noise of a 4-template ensemble at a
# quarter of the bank cost; "the color {}" with the 3 dominant colours at weight 0.3
# told recoloured copies apart 6/6. Caption share 0.3 is the largest at which an image
# alone still finds its image+text document every time (0.5 drops that to 9/13).
DEFAULT_RECIPE = ConseRecipe()
