"""The statistics behind every verdict, on synthetic replicates whose truth is known."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from runners.report.compare import CANT_TELL, HELPS, HURTS, compare, gap_recovered, minimum_detectable
from runners.report.verdicts import replicate_sd

PAIRS3 = [(0, 0), (1, 1), (2, 2)]


def replicates(rng, n, effect, sd=0.035):
    """n paired replicates: a shared per-replicate draw (seed set, order) plus each side's own noise."""
    shared = rng.normal(0, sd, n)
    base = 0.55 + shared + rng.normal(0, sd / 2, n)
    return base + effect + rng.normal(0, sd / 2, n), base


def test_a_real_effect_is_found_in_both_directions():
    rng = np.random.default_rng(1)
    a, b = replicates(rng, 5, 0.10)
    pairs = [(i, i) for i in range(5)]
    assert compare(a, b, pairs).verdict == HELPS and compare(b, a, pairs).verdict == HURTS
    assert compare(a, b, pairs).p_a_gt_b == 1.0


def test_a_null_effect_gives_cant_tell_in_95_percent_of_resampled_nulls():
    rng = np.random.default_rng(2)
    verdicts = [compare(*replicates(rng, 3, 0.0), PAIRS3).verdict for _ in range(1000)]
    cant_tell = np.mean([v.startswith(CANT_TELL) for v in verdicts])
    assert 0.93 <= cant_tell <= 0.97  # the test's 5% false positives, no more (a z-test gives ~12%)


def test_one_replicate_is_never_a_verdict():
    one = compare([0.70], [0.50], [(0, 0)])
    assert one.verdict == "can't tell (1 replicate)" and one.low is None and one.p_value is None
    assert compare([0.70], [0.50]).verdict == "can't tell (1 replicate)"


def test_the_interval_and_p_value_are_scipys_paired_t_test():
    a, b = np.array([0.61, 0.58, 0.66, 0.60]), np.array([0.55, 0.57, 0.60, 0.52])
    ours = compare(a, b, [(i, i) for i in range(4)])
    theirs = stats.ttest_rel(a, b)
    interval = theirs.confidence_interval(0.95)
    assert ours.p_value == pytest.approx(theirs.pvalue)
    assert (ours.low, ours.high) == pytest.approx((interval.low, interval.high))


def test_the_minimum_detectable_effect_is_detected_80_percent_of_the_time():
    rng, n, sd = np.random.default_rng(3), 4, 0.03
    mde = minimum_detectable(sd, n)
    found = np.mean([compare(0.5 + mde + rng.normal(0, sd, n), np.full(n, 0.5), [(i, i) for i in range(n)])
                     .verdict == HELPS for _ in range(1000)])
    assert 0.74 <= found <= 0.86


def test_unpaired_replicates_use_welchs_test():
    a, b = np.array([0.61, 0.58, 0.66]), np.array([0.55, 0.57, 0.60, 0.52])
    assert compare(a, b).p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert not compare(a, b).paired


def test_gap_recovered_is_zero_for_no_gain_and_one_for_the_oracles():
    rng = np.random.default_rng(4)
    base, oracle = 0.5 + rng.normal(0, 0.01, 3), 0.7 + rng.normal(0, 0.01, 3)
    none, low, high = gap_recovered(base, base, oracle)
    assert none == pytest.approx(0.0) and low < 0 < high
    assert gap_recovered(oracle, base, oracle)[0] == pytest.approx(1.0)
    assert gap_recovered(base, base, base)[0] is None  # an oracle that adds nothing: nothing to recover


def test_the_replicate_sd_interval_covers_the_true_sd_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    covered = []
    for _ in range(1000):  # two seed sets of 3 replicates each, sd 0.04 within a seed set
        cells = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1],
                              "accuracy": np.r_[0.5 + rng.normal(0, 0.04, 3), 0.6 + rng.normal(0, 0.04, 3)]})
        sd, low, high = replicate_sd(cells)
        covered.append(low <= 0.04 <= high)
        assert low < sd < high
    assert 0.93 <= np.mean(covered) <= 0.97
    assert replicate_sd(pd.DataFrame({"seed": [0, 1], "accuracy": [0.5, 0.6]})) is None  # one run a seed set
