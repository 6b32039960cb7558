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
    assert compare(a, b, pairs).beats[0] == 1.0


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
    none, low, high, established = gap_recovered(base, base, oracle)
    assert none == pytest.approx(0.0) and low < 0 < high and established
    assert gap_recovered(oracle, base, oracle)[0] == pytest.approx(1.0)
    assert gap_recovered(base, base, base)[:3] == (None, None, None)  # an oracle that adds nothing


def test_no_gap_is_recovered_where_the_oracles_own_gain_is_not_established():
    """Fieller's set is bounded only where the oracle beats fine-tuning significantly; else no number."""
    base, oracle, strategy = np.array([0.50, 0.55, 0.45]), np.array([0.56, 0.48, 0.54]), np.full(3, 0.52)
    _, low, high, established = gap_recovered(strategy, base, oracle, paired=True)
    assert not established and low is None and high is None


def simulated_pgr(rng, gain: float, n: int = 3, truth: float = 0.5):
    """n replicates a side, a replicate effect shared by the arms, sd 1: true PGR `truth`."""
    shared = rng.normal(0, 1, n)
    return (shared + truth * gain + rng.normal(0, 1, n), shared + rng.normal(0, 1, n),
            shared + gain + rng.normal(0, 1, n))


def test_the_gap_recovered_interval_covers_the_truth_95_percent_of_the_time():
    """Fieller over paired replicates, oracle gain 4 sd, 3 replicates: where an interval is given it covers
    the true PGR ~95% of the time (the unpaired percentile bootstrap before it: 88%)."""
    rng, covered, given = np.random.default_rng(5), 0, 0
    for _ in range(1000):
        _, low, high, established = gap_recovered(*simulated_pgr(rng, 4.0), paired=True)
        if established:
            given += 1
            covered += low <= 0.5 <= high
    assert 0.93 <= covered / given <= 0.97 and given > 500


def test_identical_differences_take_the_exact_sign_flip_test_not_p_zero():
    """Every replicate 2 points ahead: the t statistic is undefined (it read p = 0, "helps", a zero-width
    interval); the exact sign-flip test gives 2 / 2^n."""
    three = compare([0.62, 0.57, 0.60], [0.60, 0.55, 0.58], PAIRS3)
    assert three.p_value == pytest.approx(0.25) and three.verdict.startswith(CANT_TELL)
    assert three.low is None and three.test == "exact sign-flip (no spread)"
    six = compare(np.full(6, 0.62), np.full(6, 0.60), [(i, i) for i in range(6)])
    assert six.p_value == pytest.approx(2 / 2 ** 6) and six.verdict == HELPS


def on_the_grid(x):
    return np.round(np.asarray(x) * 200) / 200  # accuracy on a 200-item test split


@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_null_on_a_200_item_test_split_gives_cant_tell_at_least_94_percent_of_the_time(n):
    rng = np.random.default_rng(10 + n)
    verdicts = [compare(*map(on_the_grid, replicates(rng, n, 0.0)), [(i, i) for i in range(n)]).verdict
                for _ in range(2000)]
    assert np.mean([v.startswith(CANT_TELL) for v in verdicts]) >= 0.94


def test_welch_needs_three_replicates_a_side_and_then_holds_its_level():
    """2 against 5 with unequal spreads gave 9.9-11% false verdicts at 5%: too few to test unpaired."""
    two = compare([0.61, 0.58], [0.55, 0.57, 0.60, 0.52, 0.56])
    assert two.verdict == "can't tell (n too small for an unpaired test)" and two.p_value is None
    rng = np.random.default_rng(6)
    false = np.mean([compare(0.5 + rng.normal(0, 0.05, 3), 0.5 + rng.normal(0, 0.01, 5)).verdict
                     in (HELPS, HURTS) for _ in range(2000)])
    assert false <= 0.07


def test_the_printed_mde_is_found_80_percent_of_the_time_given_the_noise():
    """The MDE from the noncentral t and a noise figure from outside the comparison (here the true sd of
    one run): a true effect of that size is found 80% of the time, ± 5 points."""
    rng, n, sd = np.random.default_rng(7), 3, 0.035
    mde = compare(np.zeros(n), np.ones(n) * 0.01, PAIRS3, noise=sd).mde
    found = np.mean([compare(0.5 + mde + rng.normal(0, sd, n), 0.5 + rng.normal(0, sd, n), PAIRS3).verdict
                     == HELPS for _ in range(2000)])
    assert 0.75 <= found <= 0.85


def test_p_a_beats_b_is_paired_and_the_common_language_effect_unpaired_each_with_an_interval():
    paired = compare([0.62, 0.57, 0.61], [0.60, 0.58, 0.55], PAIRS3)
    share, low, high = paired.beats
    assert share == pytest.approx(2 / 3) and low < share < high and paired.row()["CL"] == ""
    assert paired.row()["P(A>B)"] == f"0.67 [{low:.2f}, {high:.2f}]"
    unpaired = compare([0.62, 0.57, 0.61], [0.60, 0.58, 0.55, 0.50])
    cl, low, high = unpaired.beats
    assert cl == pytest.approx(np.mean([a > b for a in (0.62, 0.57, 0.61) for b in (0.60, 0.58, 0.55, 0.50)]))
    assert unpaired.row()["P(A>B)"] == "" and unpaired.row()["CL"].startswith(f"{cl:.2f} [")


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


def test_a_pairing_that_leaves_replicates_out_says_how_many_each_side_ran():
    """4 replicates against 3: the 3 that pair are tested, and the row shows the 4 and the 3 that ran."""
    judged = compare([0.61, 0.58, 0.66, 0.70], [0.55, 0.57, 0.60], PAIRS3)
    assert judged.n == 3 and judged.row()["runs A/B"] == "4/3"
    assert judged.diff == pytest.approx(np.mean([0.06, 0.01, 0.06]))
