"""Correlations across cells with percentile bootstrap intervals (scipy.stats)."""

import warnings

import numpy as np
from scipy import stats


def pearson(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along `axis`; NaN where a side is constant (it has no correlation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return stats.pearsonr(a, b, axis=axis).statistic


def spearman(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis`: Pearson's r of the average ranks."""
    return pearson(stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis), axis=axis)


def correlations(x: np.ndarray, y: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Spearman and Pearson of x with y, each with a 95% percentile bootstrap interval over cells."""
    result = {}
    for name, statistic in (("pearson", pearson), ("spearman", spearman)):
        interval = stats.bootstrap((x, y), statistic, paired=True, vectorized=True, n_resamples=resamples,
                                   method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        result[name] = (float(statistic(x, y)), float(interval.low), float(interval.high))
    return result
