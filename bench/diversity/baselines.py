"""The classic diversity scores the cluster-agent paper compares with (docs/protocols.md §3), on a list of
texts. Definitions follow the `diversity` package (Shaib et al. 2024), which cannot be installed beside
transformers 5; Vendi comes from `vendi-score`, embeddings from sentence-transformers (the packaged
all-MiniLM-L6-v2 by default, no Hub access). Direction: higher is more diverse for n-gram diversity,
pairwise distance scores, K-means inertia and Vendi; lower is more diverse for compression ratio,
self-repetition and mean pairwise ROUGE-L. Perplexity and the perplexity gap (the generated data's
perplexity minus the real seed data's, under one reference LM) carry no direction of their own."""

import gzip
import logging
import math
import random
from collections import Counter
from functools import lru_cache

import numpy as np

from bench.embeddings import embed
from bench.errors import BenchError, first_line
from bench.text import rouge_l, words

log = logging.getLogger(__name__)


def ngram_diversity(texts: list[str], max_n: int = 4) -> float:
    """Sum over n = 1..max_n of unique / total word n-grams of the concatenated texts."""
    tokens = " ".join(texts).split()
    score = 0.0
    for n in range(1, max_n + 1):
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        score += len(set(grams)) / len(grams) if grams else 0.0
    return score


def compression_ratio(texts: list[str]) -> float:
    """Raw size / gzip size of the concatenated texts: repetitive data compresses well."""
    raw = " ".join(texts).encode()
    return len(raw) / len(gzip.compress(raw, mtime=0))


def self_repetition(texts: list[str], n: int = 4) -> float:
    """Mean over texts of log(1 + occurrences of the text's n-grams in the other texts)."""
    per_text = [{" ".join(t[i:i + n]) for i in range(len(t) - n + 1)} for t in (x.split() for x in texts)]
    counts = Counter(gram for grams in per_text for gram in grams)
    return sum(math.log(sum(counts[g] for g in grams) - len(grams) + 1) for grams in per_text) / len(texts)


def mean_length(texts: list[str]) -> float:
    return sum(len(t.split()) for t in texts) / len(texts)


def pairwise_rouge_l(texts: list[str], pairs: int = 2000, seed: int = 0) -> float:
    """Mean ROUGE-L F1 over all pairs, or over `pairs` random ones when there are more."""
    tokens = [words(t) for t in texts]
    n = len(tokens)
    total = n * (n - 1) // 2
    if total == 0:
        return 0.0
    if total <= pairs:
        chosen = [(i, j) for i in range(n) for j in range(i + 1, n)]
    else:
        rng = random.Random(seed)
        chosen = [tuple(rng.sample(range(n), 2)) for _ in range(pairs)]
    return sum(rouge_l(tokens[i], tokens[j]) for i, j in chosen) / len(chosen)


def kmeans_inertia(vectors: np.ndarray, clusters: int = 10, seed: int = 0) -> float:
    """Mean squared distance of the (unit) embeddings to their nearest of k centroids: spread-out data
    keeps a high inertia. NaN for no more points than clusters."""
    from sklearn.cluster import KMeans

    if len(vectors) <= clusters:  # every point its own centroid: a meaningless 0; no score, why in run.log
        log.debug(f"kmeans_inertia not computed: {len(vectors)} texts for {clusters} clusters; set "
                  f"diversity.kmeans_clusters below {len(vectors)} (the paper's 10,000 clusters need far "
                  "more texts)")
        return math.nan
    k = min(clusters, len(np.unique(vectors, axis=0)))
    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(vectors)
    return float(model.inertia_) / len(vectors)


def vendi(vectors: np.ndarray) -> float:
    """The Vendi score (Friedman & Dieng 2023): the effective number of distinct items under cosine
    similarity, between 1 (all alike) and the number of items."""
    from vendi_score import vendi as vendi_score

    return float(vendi_score.score_dual(vectors))


@lru_cache(maxsize=1)
def reference_lm(name: str):
    """The perplexity baselines' causal LM and its tokenizer (the paper's: gpt2-large)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name).eval()
    except (OSError, ValueError) as error:
        raise BenchError(f"diversity.reference_lm={name}: cannot load it ({first_line(error)}); "
                         "name a causal LM on the Hub or a local folder, or null") from None
    return model, tokenizer


def perplexity(texts: list[str], name: str, max_length: int = 512) -> float:
    """exp of the mean negative log-likelihood a token of `texts` has under the LM `name`, over all tokens
    (each text scored from its start, truncated to `max_length` tokens)."""
    import torch

    model, tokenizer = reference_lm(name)
    nll, tokens = 0.0, 0
    for text in texts:  # one at a time: no padding to get wrong
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length).input_ids
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        tokens += ids.shape[1] - 1
    return math.exp(nll / tokens) if tokens else math.nan


def baseline_scores(texts: list[str], cfg, reference: list[str] | None = None) -> dict:
    """Every baseline of `cfg` (a DiversityConfig) on `texts`."""
    scores = {"ngram_diversity": ngram_diversity(texts, cfg.ngram_max_n),
              "compression_ratio": compression_ratio(texts),
              "self_repetition": self_repetition(texts, cfg.self_repetition_n),
              "mean_length": mean_length(texts),
              "pairwise_rouge_l": pairwise_rouge_l(texts, cfg.rouge_pairs, cfg.seed)}
    if cfg.embedding_model:
        vectors = embed(texts, cfg.embedding_model)
        scores["kmeans_inertia"] = kmeans_inertia(vectors, cfg.kmeans_clusters, cfg.seed)
        scores["vendi"] = vendi(vectors)
    if cfg.reference_lm:
        scores["perplexity"] = perplexity(texts, cfg.reference_lm, cfg.perplexity_max_length)
        if reference:  # the generated data's perplexity against the real data's, under the same LM
            real = perplexity(reference, cfg.reference_lm, cfg.perplexity_max_length)
            scores["perplexity_gap"] = scores["perplexity"] - real
    return scores
