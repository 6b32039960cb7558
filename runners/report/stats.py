"""Rank correlations with bootstrap intervals, in numpy (scipy's import alone would cost a rerun's
report seconds)."""

import numpy as np


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks (from 1) along the last axis, tied values sharing their mean rank, as
    scipy.stats.rankdata does (whose import alone would cost a rerun's report seconds)."""
    order = np.argsort(a, axis=-1, kind="stable")
    ordered = np.take_along_axis(a, order, -1)
    n, edge = a.shape[-1], np.ones(a.shape[:-1] + (1,), dtype=bool)
    change = ordered[..., 1:] != ordered[..., :-1]
    position = np.broadcast_to(np.arange(n), a.shape)
    first = np.maximum.accumulate(np.where(np.concatenate([edge, change], -1), position, 0), axis=-1)
    last = np.minimum.accumulate(np.where(np.concatenate([change, edge], -1), position, n - 1)[..., ::-1],
                                 axis=-1)[..., ::-1]
    ranks = np.empty(a.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, -1)
    return ranks


def correlations(x: np.ndarray, y: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Spearman and Pearson of x with y, each with a 95% percentile bootstrap interval over cells."""
    def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # row-wise
        a = a - a.mean(axis=-1, keepdims=True)
        b = b - b.mean(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))

    index = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    xs, ys = x[index], y[index]
    result = {}
    for name, a, b, boot_a, boot_b in (("pearson", x, y, xs, ys),
                                       ("spearman", average_ranks(x), average_ranks(y), average_ranks(xs),
                                        average_ranks(ys))):
        boot = pearson(boot_a, boot_b)
        boot = boot[~np.isnan(boot)]  # resamples with a constant column have no correlation
        low, high = np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan)
        result[name] = (float(pearson(a, b)), float(low), float(high))
    return result


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    a, b = average_ranks(x) - (len(x) + 1) / 2, average_ranks(y) - (len(y) + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
