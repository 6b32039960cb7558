"""A verdict on every comparison: A against B over matched replicates (same seed set draw and replicate
index, so the pairs share their test items and seed examples), following Bouthillier et al. 2021 (P(A>B)
over replicates that randomise every source of variation) and Dror et al. 2018 (a paired test):

- Δ, the mean paired difference, with its 95% t interval (Student's t at n - 1 degrees of freedom: with
  2-3 replicates a normal 1.96 would be far too lenient, t needs 4.3 at 2 degrees of freedom);
- the test's p: the paired t-test (scipy.stats.ttest_rel); where every pair differs by the same amount
  (no spread: the t statistic is undefined) the exact sign-flip test, whose smallest p over n pairs is
  2 / 2^n; unpaired, Welch's test with 3 or more replicates a side (with 2, its error rate runs to twice
  the nominal: "can't tell (n too small for an unpaired test)"), the exact Mann-Whitney test where
  neither side varies;
- one word: helps (p < 0.05, Δ > 0), hurts (p < 0.05, Δ < 0), or can't tell;
- the minimum detectable effect (MDE): the smallest true difference the test finds with 80% power at
  these replicates, from the noncentral t (a power analysis, not the t approximation) and a noise figure
  that is not this comparison's own draw (the report pools the run-to-run sd over every recipe of the
  task and student; a paired difference's sd is taken as √2 times one run's, no credit for pairing);
- P(A>B), paired: the share of replicate pairs where A scored higher (ties half), with its Wilson
  interval; CL, unpaired: the common-language effect size, the chance a replicate of A beats one of B,
  with the Hanley-McNeil interval;
- the signal-to-noise ratio as Heineman et al. 2025 define it: the spread of the compared means (for
  two, |Δ|) over the run-to-run sd of one score (the same noise figure).

One replicate gives "can't tell (1 replicate)": one run against one run is no evidence either way."""

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
POWER = 0.8
Z95 = 1.959963984540054
HELPS, HURTS, CANT_TELL = "helps", "hurts", "can't tell"


@dataclass(frozen=True)
class Comparison:
    n: int  # replicate pairs (or, unpaired, the smaller side's replicates)
    diff: float  # mean of A - B
    low: float | None  # 95% interval of the difference
    high: float | None
    beats: tuple | None  # (P(A>B) or CL, its 95% interval low, high)
    p_value: float | None
    verdict: str  # helps, hurts, or can't tell (with why)
    mde: float | None  # minimum detectable effect at 80% power, two-sided 5%
    noise: float | None  # the run-to-run sd of one score the MDE and the SNR use
    paired: bool
    test: str = ""  # which test gave p
    runs: tuple = (0, 0)  # the replicates each side ran (pairs may use fewer)
    scale: float = 100.0  # how the row and the verdict print a difference: points of accuracy by default
    unit: str = "pts"

    @property
    def snr(self) -> float | None:
        return abs(self.diff) / self.noise if self.noise else None

    def row(self) -> dict:
        """The report's columns, in the comparison's unit; `p_raw` (unrounded) is for the report's false
        discovery control and is not printed."""
        scale, unit = self.scale, self.unit
        places = 1 if scale >= 10 else 3  # points of accuracy to a tenth; a log-likelihood to a thousandth

        def number(value, fmt=f"{{:+.{places}f}}"):
            return "" if value is None or (isinstance(value, float) and math.isnan(value)) else \
                fmt.format(value * scale if fmt.startswith("{:+") else value)

        def chance(paired: bool) -> str:
            if self.beats is None or self.paired != paired:
                return ""
            point, low, high = self.beats
            return f"{point:.2f} [{low:.2f}, {high:.2f}]"
        return {
            "n": self.n,
            "runs A/B": f"{self.runs[0]}/{self.runs[1]}",
            f"Δ ({unit})": number(self.diff),
            "95% interval": "" if self.low is None else
            f"[{self.low * scale:+.{places}f}, {self.high * scale:+.{places}f}]",
            "P(A>B)": chance(True),
            "CL": chance(False),
            "test": self.test,
            "p": number(self.p_value, "{:.3f}"),
            "p_raw": self.p_value,
            "verdict": self.verdict,
            f"MDE ({unit})": "" if self.mde is None else f"{self.mde * scale:.{places}f}",
            "SNR": number(self.snr, "{:.2f}"),
        }


def power_of(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """The two-sided t-test's power for a true difference `effect` whose estimate has standard error
    `se`, at `df` degrees of freedom: the noncentral t's mass beyond the critical values."""
    from scipy import stats

    critical, shift = stats.t.ppf(1 - alpha / 2, df), effect / se
    # the lower tail as the upper of -shift: scipy's nct.cdf far in the left tail returns nan
    return float(stats.nct.sf(critical, df, shift) + stats.nct.sf(critical, df, -shift))


def detectable(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a t-test with this standard error and df finds with `power`."""
    return se * _detectable_in_se(float(df), alpha, power)


@functools.lru_cache(maxsize=4096)
def _detectable_in_se(df: float, alpha: float, power: float) -> float:
    """The detectable difference in standard errors: it depends on df alone (solved once per df)."""
    from scipy import optimize

    high = 1.0
    while power_of(high, 1.0, df, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda e: power_of(e, 1.0, df, alpha) - power, 0.0, high, xtol=1e-9))


def minimum_detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference a two-sided paired t-test over n replicates, with `sd` the sd of
    a paired difference, detects with `power` (noncentral t, n - 1 degrees of freedom)."""
    if n < 2 or not sd:
        return None
    return detectable(sd / math.sqrt(n), n - 1, alpha, power)


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


def sign_flip_p(d: np.ndarray) -> float:
    """The exact two-sided sign-flip (randomisation) test of paired differences: the share of the 2^n
    sign assignments whose mean is at least as far from 0 as the observed one."""
    observed = abs(d.mean())
    flips = np.array(list(itertools.product((1, -1), repeat=len(d))))
    return float(np.mean(np.abs((flips * d).mean(axis=1)) >= observed - 1e-12))


def wilson(share: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion observed over n trials."""
    centre = (share + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(share * (1 - share) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def common_language(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """P(a replicate of A beats one of B), ties half, with the Hanley-McNeil (1982) 95% interval."""
    cl = float(np.mean(a[:, None] > b[None, :]) + 0.5 * np.mean(a[:, None] == b[None, :]))
    q1, q2 = cl / (2 - cl), 2 * cl * cl / (1 + cl)
    se = math.sqrt(max(0.0, (cl * (1 - cl) + (len(a) - 1) * (q1 - cl * cl) + (len(b) - 1) * (q2 - cl * cl))
                       / (len(a) * len(b))))
    return cl, max(0.0, cl - Z95 * se), min(1.0, cl + Z95 * se)


def compare(a, b, pairs: list | None = None, alpha: float = ALPHA, scale: float = 100.0, unit: str = "pts",
            noise: float | None = None) -> Comparison:
    """A against B. `pairs`: (i, j) index pairs of A's and B's replicates that match (same replicate and
    seed set); None or empty: unpaired. `noise`: the run-to-run sd of one score for the MDE and the SNR
    (None: pooled over A's and B's own replicates). `scale` and `unit`: how a difference prints."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    noise = noise if noise is not None else _pooled_sd(a, b)
    common = {"noise": noise, "runs": (len(a), len(b)), "scale": scale, "unit": unit}
    if pairs:
        d = np.array([a[i] - b[j] for i, j in pairs])
        n, diff = len(d), float(d.mean())
        if n < 2:
            return Comparison(n, diff, None, None, None, None, f"{CANT_TELL} (1 replicate)", None,
                              paired=True, **common)
        sd = float(d.std(ddof=1))
        if sd <= 1e-9:  # the same difference every time (to rounding): no t statistic, and 0 is no interval
            p_value, low, high, test = sign_flip_p(d), None, None, "exact sign-flip (no spread)"
        else:
            p_value = float(stats.ttest_rel(a[[i for i, _ in pairs]], b[[j for _, j in pairs]]).pvalue)
            half = float(stats.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n))
            low, high, test = diff - half, diff + half, "paired t"
        mde = minimum_detectable(math.sqrt(2) * noise, n, alpha) if noise else None
        share = float(np.mean(d > 0) + 0.5 * np.mean(d == 0))
        return Comparison(n, diff, low, high, (share, *wilson(share, n)), p_value,
                          _verdict(diff, p_value, mde, alpha, scale, unit), mde, paired=True,
                          test=test, **common)
    n, diff = min(len(a), len(b)), float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if n < 2:
        return Comparison(n, diff, None, None, None, None, f"{CANT_TELL} (1 replicate)", None, paired=False,
                          **common)
    if n < 3:
        return Comparison(n, diff, None, None, None, None, f"{CANT_TELL} (n too small for an unpaired test)",
                          None, paired=False, **common)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb <= 1e-18:  # neither side varies (to rounding)
        p_value, low, high = float(stats.mannwhitneyu(a, b, method="exact").pvalue), None, None
        test = "exact Mann-Whitney (no spread)"
    else:
        p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
        half = float(stats.t.ppf(1 - alpha / 2, df) * math.sqrt(va + vb))
        low, high, test = diff - half, diff + half, "Welch"
    se = noise * math.sqrt(1 / len(a) + 1 / len(b)) if noise else None
    mde = detectable(se, len(a) + len(b) - 2, alpha) if se else None
    return Comparison(n, diff, low, high, common_language(a, b), p_value,
                      _verdict(diff, p_value, mde, alpha, scale, unit), mde, paired=False, test=test,
                      **common)


def _pooled_sd(a: np.ndarray, b: np.ndarray) -> float | None:
    """The run-to-run sd of one score, pooled over both sides' replicates (None with fewer than 2 each)."""
    parts = [(len(x) - 1, x.var(ddof=1)) for x in (a, b) if len(x) > 1]
    if not parts or not sum(dof for dof, _ in parts):
        return None
    return float(math.sqrt(sum(dof * var for dof, var in parts) / sum(dof for dof, _ in parts)))


def fieller(x: float, y: float, vx: float, vy: float, cxy: float, df: float, alpha: float = ALPHA
            ) -> tuple[float, float] | None:
    """Fieller's 95% interval for the ratio of two means x / y, with their variances and covariance:
    bounded only where y is itself significantly away from 0 at `alpha` (else None: the set is the whole
    line, or two rays)."""
    from scipy import stats

    t2 = stats.t.ppf(1 - alpha / 2, df) ** 2
    a, b, c = y * y - t2 * vy, -2 * (x * y - t2 * cxy), x * x - t2 * vx
    disc = b * b - 4 * a * c
    if a <= 0 or disc < 0:
        return None
    root = math.sqrt(disc)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def gap_recovered(strategy, baseline, oracle, paired: bool = False) -> tuple:
    """Performance Gap Recovered (Kim et al. 2024): (strategy - baseline) / (oracle - baseline), the
    share of what a perfect teacher adds that the strategy's teacher adds, with Fieller's 95% interval:
    over the replicates' paired differences (`paired`: the three arrays are aligned by replicate), else
    over three independent samples (the baseline's mean shared by numerator and denominator). Returns
    (PGR, low, high, established): `established` False where the oracle's own gain is not significant,
    so there is no gap to recover and no number is given."""
    s, f, o = (np.asarray(x, dtype=float) for x in (strategy, baseline, oracle))
    if not (len(s) and len(f) and len(o)):
        return None, None, None, False
    if paired:
        gain, gap = s - f, o - f
        n = len(gain)
        if n < 2:
            return None, None, None, False
        cov = np.cov(gain, gap, ddof=1) / n
        x, y, vx, vy, cxy, df = gain.mean(), gap.mean(), cov[0, 0], cov[1, 1], cov[0, 1], n - 1
    else:
        if min(len(s), len(f), len(o)) < 2:
            return None, None, None, False
        vs, vf, vo = (z.var(ddof=1) / len(z) for z in (s, f, o))
        x, y, vx, vy, cxy = s.mean() - f.mean(), o.mean() - f.mean(), vs + vf, vo + vf, vf
        df = min(len(s), len(f), len(o)) - 1  # conservative: the smallest sample's
    if y <= 0:
        return None, None, None, False
    interval = fieller(x, y, vx, vy, cxy, df)
    if interval is None:
        return float(x / y), None, None, False
    return float(x / y), float(interval[0]), float(interval[1]), True
