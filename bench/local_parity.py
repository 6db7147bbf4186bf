"""How closely the torch-free graphs reproduce the PyTorch reference; prints JSON.

The figures tests/test_local_parity.py asserts (cosine >= 0.9999 per vector): logits of
every photo bundled with scikit-image against eager torch, 1,000 text embeddings against
transformers, and the final embeddings (images, image+text, texts) against the model as
it was before, with both graphs exported by torch.onnx. Needs the parity extra.
Run: python -m bench.local_parity
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from imgrag.connectors.embedder import ImageInput
from imgrag.connectors.local import LocalEmbedder
from imgrag.connectors.local import torch_reference as ref
from imgrag.connectors.local.image_input import prepare
from imgrag.connectors.local.vision_model import ImageClassifier, vision_cache_path

from bench._local_parity import (
    agreement,
    package_photos,
    parity_texts,
    reference_logits,
    reference_sentence_embeddings,
)


def main() -> None:
    photos = package_photos()
    texts = parity_texts(1000)
    with tempfile.TemporaryDirectory() as tmp:
        new = LocalEmbedder(Path(tmp) / "new")
        import imgrag.connectors.local.embedder as emb

        built = emb.build_minilm_graph, emb.build_efficientnet
        emb.build_minilm_graph = ref.export_minilm_with_torch
        emb.build_efficientnet = ref.export_efficientnet_with_torch
        try:
            old = LocalEmbedder(Path(tmp) / "old")
        finally:
            emb.build_minilm_graph, emb.build_efficientnet = built

        pixels = np.stack([prepare(data).pixels for _, data in photos])
        classifier = ImageClassifier(vision_cache_path(new.load_report.cache_dir))
        ours = classifier._session.run(["logits"], {"pixels": pixels})[0]
        theirs = reference_logits(ref.load_eager_efficientnet(), pixels)
        new_texts = new.encode_texts(texts)
        items = [ImageInput(d) for _, d in photos]
        pairs = [ImageInput(d, text=f"{n} on my desk") for n, d in photos]
        result = {
            "photos": len(photos),
            "texts": len(texts),
            "image_logits_vs_eager_torch": agreement(ours, theirs).as_dict(),
            "top1_class_equal": bool((ours.argmax(1) == theirs.argmax(1)).all()),
            "text_embeddings_vs_transformers": agreement(
                new_texts, reference_sentence_embeddings(ref.load_eager_minilm(), texts)
            ).as_dict(),
            "vs_torch_exported_model": {
                "image_embeddings": agreement(
                    new.encode_images(items), old.encode_images(items)
                ).as_dict(),
                "image_text_embeddings": agreement(
                    new.encode_images(pairs), old.encode_images(pairs)
                ).as_dict(),
                "text_embeddings": agreement(new_texts, old.encode_texts(texts)).as_dict(),
                "prompt_bank_classes": agreement(new._bank.classes, old._bank.classes).as_dict(),
            },
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
