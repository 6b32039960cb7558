"""Near-duplicate filter benchmark: generated GSM8K-style questions against the 7,473-question training
pool, filtered by comparing every pair (the filter before the prefix index) and by the prefix-filtered
index (bench/strategies/filters.py), with the decisions checked equal. Comparing every pair takes hours at
100,000 candidates, so it runs on `--scan-sample` candidates at the start (against the pool) and at the
end (against the pool and every question admitted), and its total is estimated from the two.

    python -m runners.benchmarks.filters [--candidates 100000] [--scan-sample 300] [--threshold 0.95]
"""

import argparse
import random
import time
from collections import Counter

from hydra import compose, initialize_config_dir

from bench.config import FiltersConfig, conf_dir, validated
from bench.config_store import register_configs
from bench.strategies.base import Tally
from bench.strategies.filters import Filters, near_duplicate_pair
from bench.tasks import load_task, question_of
from bench.text import words

CONF = conf_dir()


def generated_questions(pool: list[str], count: int, seed: int = 0) -> list[str]:
    """GSM8K-style questions made from the pool: a tenth nearly copies one (a word dropped or changed), a
    tenth adds 5-15% new words to one (the edge of ROUGE-L 0.95, where the shared words are the common
    ones), the rest rewrite a third of one's words or splice two, as a teacher's new questions do."""
    rng = random.Random(seed)
    vocabulary = sorted({w for q in pool for w in q.split()})
    questions = []
    for _ in range(count):
        base = rng.choice(pool).split()
        kind = rng.random()
        if kind < 0.1:  # a near copy
            i = rng.randrange(len(base))
            changed = [] if rng.random() < 0.5 else [rng.choice(vocabulary)]  # dropped, or replaced
            base = base[:i] + changed + base[i + 1:]
        elif kind < 0.2:  # words no question has, added
            for _ in range(round(rng.uniform(0.05, 0.15) * len(base))):
                base.insert(rng.randrange(len(base) + 1), f"new{rng.randrange(10**9)}")
        elif kind < 0.7:  # a third of the words rewritten
            base = [rng.choice(vocabulary) if rng.random() < 0.33 else w for w in base]
        else:  # two questions spliced
            other = rng.choice(pool).split()
            base = base[: len(base) // 2] + other[len(other) // 2:]
        questions.append(" ".join(base))
    return questions


def every_pair_near_duplicate(known: list, tokens: list, t: float) -> bool:
    """The filter before the index: every known question, bounded, then the exact LCS."""
    bag = Counter(tokens)
    return any(near_duplicate_pair(tokens, bag, other, other_bag, t) for other, other_bag in known)


def every_pair_decisions(pool: list[str], candidates: list[str], t: float) -> list[bool]:
    """Admitted or not, per candidate, comparing with every known question (admitted ones join them)."""
    known = [(tokens, Counter(tokens)) for tokens in map(words, pool)]
    decisions = []
    for question in candidates:
        tokens = words(question)
        duplicate = bool(tokens) and every_pair_near_duplicate(known, tokens, t)
        decisions.append(not duplicate)
        if not duplicate:
            known.append((tokens, Counter(tokens)))
    return decisions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runners.benchmarks.filters",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--scan-sample", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.95)
    args = parser.parse_args(argv)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validated(compose("config", overrides=["task=gsm8k", "logger=none"]))
    data = load_task(cfg.task, cfg.data_dir)
    pool = [question_of(e, data) for e in data.train]
    candidates = generated_questions(pool, args.candidates)

    started = time.perf_counter()
    filters = Filters(data, data.train, FiltersConfig(near_duplicate_rouge_l=args.threshold))
    built = time.perf_counter() - started
    tally = Tally()
    decisions = [filters.admit(q, tally) for q in candidates]
    indexed = time.perf_counter() - started

    started = time.perf_counter()
    reference = every_pair_decisions(pool, candidates[: args.scan_sample], args.threshold)
    scan_start = (time.perf_counter() - started) / args.scan_sample
    assert reference == decisions[: args.scan_sample], "the index and every-pair comparison disagree"
    started = time.perf_counter()  # the known questions grow as candidates are admitted: time the end too
    for question in generated_questions(pool, args.scan_sample, seed=1):
        every_pair_near_duplicate(filters.known, words(question), args.threshold)
    scan_end = (time.perf_counter() - started) / args.scan_sample
    scan_total = len(candidates) * (scan_start + scan_end) / 2  # the known set grows linearly

    print(f"\n{len(candidates):,} generated GSM8K-style questions against the {len(pool):,}-question "
          f"training pool, ROUGE-L threshold {args.threshold}; {tally.counts['near_duplicate']:,} near "
          "duplicates dropped\n")
    print("| filter | seconds for all candidates | per candidate | decisions |")
    print("|---|---|---|---|")
    print(f"| every pair (before) | {scan_total:,.0f} (estimated) | {scan_start * 1e3:.1f} ms at the start, "
          f"{scan_end * 1e3:.1f} ms at the end ({len(filters.known):,} known) | reference |")
    print(f"| prefix-filtered index (now) | {indexed:,.1f} (index built in {built:.1f}) | "
          f"{indexed / len(candidates) * 1e6:.0f} µs | identical on the first {args.scan_sample} |")


if __name__ == "__main__":
    main()
