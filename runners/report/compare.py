"""A verdict on every comparison: A against B over matched replicates (same seed set draw and replicate
index, so the pairs share their test items and seed examples), following Bouthillier et al. 2021 (P(A>B)
over replicates that randomise every source of variation) and Dror et al. 2018 (a paired test):

- Δ, the mean paired difference, with its 95% t interval (Student's t at n - 1 degrees of freedom: with
  2-3 replicates a normal 1.96 would be far too lenient, t needs 4.3 at 2 degrees of freedom);
- P(A>B), the share of replicate pairs where A scored higher (ties count half);
- the p-value of the paired t-test (scipy.stats.ttest_rel), or Welch's test when the replicates do
  not pair up;
- one word: helps (p < 0.05, Δ > 0), hurts (p < 0.05, Δ < 0), or can't tell, with the minimum detectable
  effect at 80% power for these replicates and this noise;
- the signal-to-noise ratio (Heineman et al. 2025): |Δ| over the run-to-run spread of a single score.

One replicate gives "can't tell (1 replicate)": one run against one run is no evidence either way."""

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
POWER = 0.8
HELPS, HURTS, CANT_TELL = "helps", "hurts", "can't tell"


@dataclass(frozen=True)
class Comparison:
    n: int  # replicate pairs (or, unpaired, the smaller side's replicates)
    diff: float  # mean of A - B
    low: float | None  # 95% interval of the difference
    high: float | None
    p_a_gt_b: float | None
    p_value: float | None
    verdict: str  # helps, hurts, or can't tell (with why)
    mde: float | None  # minimum detectable effect at 80% power, two-sided 5%
    noise: float | None  # the run-to-run sd of one score (pooled over A and B)
    paired: bool
    scale: float = 100.0  # how the row and the verdict print a difference: points of accuracy by default
    unit: str = "pts"

    @property
    def snr(self) -> float | None:
        return abs(self.diff) / self.noise if self.noise else None

    def row(self) -> dict:
        """The report's columns, in the comparison's unit."""
        scale, unit = self.scale, self.unit
        places = 1 if scale >= 10 else 3  # points of accuracy to a tenth; a log-likelihood to a thousandth

        def number(value, fmt=f"{{:+.{places}f}}"):
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else \
                fmt.format(value * scale if fmt.startswith("{:+") else value)
        return {
            "n": self.n,
            f"Δ ({unit})": number(self.diff),
            "95% interval": "" if self.low is None else
            f"[{self.low * scale:+.{places}f}, {self.high * scale:+.{places}f}]",
            "P(A>B)": number(self.p_a_gt_b, "{:.2f}"),
            "p": number(self.p_value, "{:.3f}"),
            "verdict": self.verdict,
            f"MDE ({unit})": "" if self.mde is None else f"{self.mde * scale:.{places}f}",
            "SNR": number(self.snr, "{:.2f}"),
        }


def minimum_detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference a two-sided t-test over n paired replicates with this sd of
    the differences detects with the given power (the usual t approximation)."""
    from scipy import stats

    if n < 2:
        return None
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def replicates_needed(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                      most: int = 1000) -> int | None:
    """How many paired replicates detect `effect` (same units as sd, the sd of a paired difference)."""
    if effect <= 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if minimum_detectable(sd, n, alpha, power) <= effect:
            return n
    return None


def _verdict(diff: float, p_value: float | None, mde: float | None, alpha: float, scale: float, unit: str
             ) -> str:
    if p_value is not None and p_value < alpha and diff != 0:
        return HELPS if diff > 0 else HURTS
    return CANT_TELL + (f" (effects under {scale * mde:.{1 if scale >= 10 else 3}f} {unit} undetectable)"
                        if mde else "")


def compare(a, b, pairs: list | None = None, alpha: float = ALPHA, scale: float = 100.0, unit: str = "pts"
            ) -> Comparison:
    """A against B. `pairs`: (i, j) index pairs of A's and B's replicates that match (same replicate and
    seed set); None or empty: unpaired (Welch), when both sides have 2 or more replicates. `scale` and
    `unit`: how a difference prints (accuracy in points; a log-likelihood as it is, in nats)."""
    from scipy import stats

    units = {"scale": scale, "unit": unit}

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    noise = _pooled_sd(a, b)
    if pairs:
        d = np.array([a[i] - b[j] for i, j in pairs])
        n, diff = len(d), float(d.mean())
        if n < 2:
            return Comparison(n, diff, None, None, None, None, f"{CANT_TELL} (1 replicate)", None, noise,
                              True, **units)
        sd = float(d.std(ddof=1))
        if sd == 0:  # the same difference every time: no spread to test against
            p_value = 0.0 if diff != 0 else 1.0
            half = 0.0
        else:
            p_value = float(stats.ttest_rel(a[[i for i, _ in pairs]], b[[j for _, j in pairs]]).pvalue)
            half = float(stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n))
        mde = minimum_detectable(sd, n, alpha)
        p_a_gt_b = float(np.mean(d > 0) + 0.5 * np.mean(d == 0))
        return Comparison(n, diff, diff - half, diff + half, p_a_gt_b, p_value,
                          _verdict(diff, p_value, mde, alpha, scale, unit), mde, noise, True, **units)
    n, diff = min(len(a), len(b)), float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if n < 2:
        return Comparison(n, diff, None, None, None, None, f"{CANT_TELL} (1 replicate)", None, noise, False,
                          **units)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        p_value, half, df = (0.0 if diff != 0 else 1.0), 0.0, len(a) + len(b) - 2
    else:
        p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
        half = float(stats.t.ppf(1 - alpha / 2, df) * se)
    mde = float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(POWER, df)) * se)
    p_a_gt_b = float(np.mean(a[:, None] > b[None, :]) + 0.5 * np.mean(a[:, None] == b[None, :]))
    return Comparison(n, diff, diff - half, diff + half, p_a_gt_b, p_value,
                      _verdict(diff, p_value, mde, alpha, scale, unit), mde, noise, False, **units)


def _pooled_sd(a: np.ndarray, b: np.ndarray) -> float | None:
    """The run-to-run sd of one score, pooled over both sides' replicates (None with fewer than 2 each)."""
    parts = [(len(x) - 1, x.var(ddof=1)) for x in (a, b) if len(x) > 1]
    if not parts:
        return None
    return float(math.sqrt(sum(dof * var for dof, var in parts) / sum(dof for dof, _ in parts)))


def gap_recovered(strategy, baseline, oracle, seed: int = 0, resamples: int = 2000) -> tuple:
    """Performance Gap Recovered (Kim et al. 2024): (strategy - baseline) / (oracle - baseline), the
    share of what a perfect teacher adds that the strategy's teacher adds, with a 95% bootstrap interval
    over the replicates of each side (None where the oracle adds nothing to recover)."""
    s, f, o = (np.asarray(x, dtype=float) for x in (strategy, baseline, oracle))
    if not (len(s) and len(f) and len(o)):
        return None, None, None

    def pgr(ms, mf, mo):
        gap = mo - mf
        return (ms - mf) / gap if gap > 0 else math.nan

    point = float(pgr(s.mean(), f.mean(), o.mean()))
    if math.isnan(point) or min(len(s), len(f), len(o)) < 2:
        return (None if math.isnan(point) else point), None, None
    from scipy import stats

    interval = stats.bootstrap((s, f, o), lambda x, y, z: pgr(x.mean(), y.mean(), z.mean()),
                               vectorized=False, paired=False, n_resamples=resamples, method="percentile",
                               rng=np.random.default_rng(seed)).confidence_interval
    if math.isnan(interval.low) or math.isnan(interval.high):  # some resamples have no gap to recover
        return point, None, None
    return point, float(interval.low), float(interval.high)
