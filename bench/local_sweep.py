"""Sweep of the ConSE recipe (k, prompts, weights) on the bundled photos; prints JSON.

The network runs once per image; every recipe is then scored from cached probabilities,
colour thumbnails and text embeddings. Stage 1 is a joint grid over class prompts, k,
temperature and the colour term; stage 2 sweeps the caption share of image+text at the
stage-1 winner. Score = text->image MRR + augmented image->image recall@1 + colour-variant
accuracy; within SCORE_TOLERANCE of the top score the simplest recipe wins (fewer
templates, smaller k, smaller colour weight).
Run: python -m bench.local_sweep
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.local import DEFAULT_RECIPE, ConseRecipe, LocalEmbedder, conse
from imgrag.connectors.local.class_names import NUM_CLASSES, class_prompts, colour_prompts
from imgrag.connectors.local.colours import colour_histogram, weights_from_histogram
from imgrag.connectors.local.image_input import prepare
from imgrag.connectors.local.text_model import normalize_rows

from bench._local_metrics import Inputs, Vectors, evaluate

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.",),
    "bare": ("{}",),
    "ensemble4": (
        "a photo of a {}.",
        "a picture of a {}.",
        "a close-up photo of the {}.",
        "a {} in the scene.",
    ),
}
NAME_SOURCES = ("clean", "wordnet", "first")
TOP_K = (1, 3, 5, 10, 20, 50, 100)
TEMPERATURES = (1.0, 2.0, 3.0)
COLOUR_TEMPLATES = ("{}", "the color {}", "something {}")
COLOUR_TOP = (1, 2, 3)
COLOUR_WEIGHTS = (0.0, 0.15, 0.3, 0.5, 0.7, 1.0)
SCORE_TOLERANCE = 0.01
CAPTION_WEIGHTS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


class CachedModel:
    """Scores recipes without rerunning the networks."""

    def __init__(self, embedder: LocalEmbedder, images: list[bytes]) -> None:
        self._embedder = embedder
        # Plain softmax (T=1); each recipe's temperature is applied below.
        probs = embedder.class_probabilities([ImageInput(b) for b in images], temperature=1.0)
        self._probs = {b: p for b, p in zip(images, probs, strict=True)}
        self._hists = {b: colour_histogram(prepare(b).thumbnail) for b in images}
        self._texts: dict[str, np.ndarray] = {}
        self._banks: dict[tuple[str, ...], Vectors] = {}
        self.recipe = DEFAULT_RECIPE

    def texts(self, texts: Sequence[str]) -> Vectors:
        todo = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if todo:
            for t, v in zip(todo, self._embedder.encode_texts(todo), strict=True):
                self._texts[t] = v
        return np.stack([self._texts[t] for t in texts])

    def class_bank(self, recipe: ConseRecipe) -> Vectors:
        key = (recipe.name_source, *recipe.templates)
        if key not in self._banks:
            flat = [p for prompts in class_prompts(recipe) for p in prompts]
            vecs = self.texts(flat).reshape(NUM_CLASSES, len(recipe.templates), -1)
            self._banks[key] = normalize_rows(vecs.mean(axis=1))
        return self._banks[key]

    def images(self, items: Sequence[ImageInput]) -> Vectors:
        r = self.recipe
        probs = np.stack([self._probs[i.data] for i in items])
        if r.temperature != 1.0:
            probs = probs ** (1.0 / r.temperature)
            probs = probs / probs.sum(axis=1, keepdims=True)
        classes = conse.class_term(probs, self.class_bank(r), r.top_k)
        weights = np.stack(
            [weights_from_histogram(self._hists[i.data], r.colours, r.colour_top) for i in items]
        )
        colours = conse.colour_term(weights, self.texts(colour_prompts(r)))
        out = conse.image_vectors(classes, colours, r.colour_weight)
        captioned = [j for j, i in enumerate(items) if i.text is not None]
        if captioned:
            caps = self.texts([items[j].text or "" for j in captioned])
            out[captioned] = conse.fuse_caption(out[captioned], caps, r.caption_weight)
        return out


def score(report: dict) -> float:
    return (
        report["text_to_image"]["mrr"]
        + report["image_to_image_augmented"]["recall@1"]
        + report["colour_variants"]["accuracy"]
    )


def simplicity(r: ConseRecipe) -> tuple:
    # Lower is simpler: used only to break exact score ties.
    return (len(r.templates), r.top_k, r.colour_weight, r.colour_top, r.temperature)


def summary(r: ConseRecipe, report: dict) -> dict:
    return {
        "name_source": r.name_source,
        "templates": list(r.templates),
        "top_k": r.top_k,
        "temperature": r.temperature,
        "colour_template": r.colour_template,
        "colour_top": r.colour_top,
        "colour_weight": r.colour_weight,
        "score": round(score(report), 4),
        "text_mrr": round(report["text_to_image"]["mrr"], 4),
        "text_recall@1": round(report["text_to_image"]["recall@1"], 4),
        "text_recall@5": round(report["text_to_image"]["recall@5"], 4),
        "augmented_recall@1": round(report["image_to_image_augmented"]["recall@1"], 4),
        "colour_accuracy": round(report["colour_variants"]["accuracy"], 4),
    }


def main() -> None:
    started = time.perf_counter()
    inputs = Inputs()
    with tempfile.TemporaryDirectory() as tmp:
        embedder = LocalEmbedder(Path(tmp))
        model = CachedModel(embedder, inputs.all_images())
        rows: list[tuple[ConseRecipe, dict]] = []
        grid = itertools.product(
            NAME_SOURCES,
            TEMPLATE_SETS.values(),
            TOP_K,
            TEMPERATURES,
            COLOUR_TEMPLATES,
            COLOUR_TOP,
            COLOUR_WEIGHTS,
        )
        for name, templates, k, temp, ctemplate, ctop, cweight in grid:
            if cweight == 0.0 and (ctemplate != COLOUR_TEMPLATES[0] or ctop != COLOUR_TOP[0]):
                continue  # without a colour term these settings change nothing
            model.recipe = ConseRecipe(
                name_source=name,
                templates=templates,
                top_k=k,
                temperature=temp,
                colour_template=ctemplate,
                colour_top=ctop,
                colour_weight=cweight,
            )
            rows.append((model.recipe, evaluate(inputs, model.images, model.texts)))
        rows.sort(key=lambda row: (-score(row[1]), simplicity(row[0])))
        # 26 queries and 6 colour queries cannot separate recipes closer than this, so the
        # simplest recipe within it wins rather than the noisiest top score.
        top_score = score(rows[0][1])
        best_row = min(
            (row for row in rows if score(row[1]) >= top_score - SCORE_TOLERANCE),
            key=lambda row: simplicity(row[0]),
        )
        best = best_row[0]

        caption_rows = []
        for w in CAPTION_WEIGHTS:
            model.recipe = best.model_copy(update={"caption_weight": w})
            it = evaluate(inputs, model.images, model.texts)["image_plus_text"]
            caption_rows.append({"caption_weight": w, **it})
        # Both directions must work: maximize the weaker one, then prefer the smaller weight.
        chosen_caption = max(
            caption_rows,
            key=lambda r: (
                min(r["image_query_recall@1"], r["caption_query_recall@1"]),
                r["image_query_recall@1"] + r["caption_query_recall@1"],
                -abs(r["caption_weight"] - 0.5),
            ),
        )

    default_row = next(
        (
            row
            for row in rows
            if row[0].model_copy(update={"caption_weight": DEFAULT_RECIPE.caption_weight})
            == DEFAULT_RECIPE
        ),
        None,
    )

    def best_per(field: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for r, rep in rows:
            value = getattr(r, field)
            key = "|".join(value) if isinstance(value, tuple) else str(value)
            out[key] = max(out.get(key, 0.0), round(score(rep), 4))
        return out

    print(
        json.dumps(
            {
                "configs": len(rows),
                "score": "text->image MRR + augmented image->image recall@1 + colour accuracy",
                "best_score": summary(*rows[0]),
                "chosen": summary(*best_row),
                "score_tolerance": SCORE_TOLERANCE,
                "top10": [summary(r, rep) for r, rep in rows[:10]],
                "best_score_by": {
                    f: best_per(f)
                    for f in (
                        "name_source",
                        "templates",
                        "top_k",
                        "temperature",
                        "colour_template",
                        "colour_top",
                        "colour_weight",
                    )
                },
                "caption_weight_sweep": caption_rows,
                "chosen_caption_weight": chosen_caption["caption_weight"],
                "default_recipe": summary(*default_row) if default_row else None,
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
