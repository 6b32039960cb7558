"""How well the report's statistics keep their promises, by simulation (runners/report/compare.py): the
share of false verdicts on null comparisons (paired at n = 2, 3, 5 on a 200-item test split; unpaired 3
against 5 with unequal spreads), the power at the printed minimum detectable effect, and the coverage of
the Performance Gap Recovered interval (3 replicates a side, a replicate effect shared by the arms, true
PGR 0.5, oracle gain 4 and 2 sd). A fixed seed; the tests (tests/test_compare.py) run smaller versions.

    python -m runners.benchmarks.calibration [--runs N]
"""

import argparse
import sys

import numpy as np

from runners.report.compare import CANT_TELL, HELPS, compare, gap_recovered


def on_the_grid(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 200) / 200  # accuracy on a 200-item test split


def paired_null(rng, n: int, sd: float = 0.035):
    """Two arms sharing each replicate's draw (seed set, order) plus their own noise, no true effect."""
    shared = rng.normal(0, sd, n)
    base = 0.55 + shared + rng.normal(0, sd / 2, n)
    return on_the_grid(base + rng.normal(0, sd / 2, n)), on_the_grid(base)


def calibrate(runs: int, seed: int = 0) -> list[tuple[str, str]]:
    rng, lines = np.random.default_rng(seed), []
    for n in (2, 3, 5):
        pairs = [(i, i) for i in range(n)]
        false = np.mean([not compare(*paired_null(rng, n), pairs).verdict.startswith(CANT_TELL)
                         for _ in range(runs)])
        lines.append((f"null, paired, n = {n} (sd 0.035, 200-item test split)",
                      f"{false:.1%} false verdicts"))
    for sizes in ((2, 5), (3, 5)):
        false = np.mean([not compare(0.5 + rng.normal(0, 0.05, sizes[0]),
                                     0.5 + rng.normal(0, 0.01, sizes[1])).verdict.startswith(CANT_TELL)
                         for _ in range(runs)])
        lines.append((f"null, unpaired, {sizes[0]} vs {sizes[1]} (sd 0.05 vs 0.01)",
                      f"{false:.1%} false verdicts"))
    n, sd = 3, 0.035
    pairs = [(i, i) for i in range(n)]
    mde = compare(np.zeros(n), np.full(n, 0.01), pairs, noise=sd).mde
    found = np.mean([compare(0.5 + mde + rng.normal(0, sd, n), 0.5 + rng.normal(0, sd, n), pairs).verdict
                     == HELPS for _ in range(runs)])
    lines.append((f"power at the printed MDE (n = 3, noise sd {sd} given): {100 * mde:.1f} pts",
                  f"found {found:.1%} of the time"))
    for gain in (4.0, 2.0):
        covered = given = 0
        for _ in range(runs):
            shared = rng.normal(0, 1, 3)
            sides = (shared + gain / 2 + rng.normal(0, 1, 3), shared + rng.normal(0, 1, 3),
                     shared + gain + rng.normal(0, 1, 3))
            _, low, high, established = gap_recovered(*sides, paired=True)
            if established:
                given += 1
                covered += low <= 0.5 <= high
        figure = (f"coverage {covered / max(1, given):.1%} of the {given / runs:.0%} of runs that get one; "
                  "the rest: no gap to recover")
        lines.append((f"PGR interval, oracle gain {gain:g} sd, 3 replicates (Fieller, paired)", figure))
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.benchmarks.calibration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4000, help="simulated comparisons per line (4000)")
    args = parser.parse_args(argv)
    lines = calibrate(args.runs)
    width = max(len(what) for what, _ in lines)
    for what, figure in lines:
        print(f"{what:<{width}}  {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
