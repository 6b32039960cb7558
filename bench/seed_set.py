"""The seed set S: a reproducible draw from the training split, a function of (task, size, seed)."""

import math
import random
from collections import defaultdict

from bench.config import SeedSetConfig
from bench.errors import BenchError
from bench.tasks import Example


def seed_set_size(cfg: SeedSetConfig, available: int, task: str) -> int:
    """|S| (the config's ranges are checked in SeedSetConfig; the pool's size only here)."""
    if cfg.size is None and cfg.fraction is None:
        return available  # the budget study's |S| = full
    if cfg.size is not None:
        if cfg.size > available:
            raise BenchError(
                f"seed_set.size={cfg.size} exceeds the {available} training examples of {task}; "
                f"choose seed_set.size<={available} or a seed_set.fraction"
            )
        return cfg.size
    return max(1, int(cfg.fraction * available))  # the LLM2LLM authors' int(): GSM8K 1% = 74, not 75


def sample_seed_set(train: list[Example], cfg: SeedSetConfig, task: str) -> list[Example]:
    """`size` examples drawn with `seed`; stratified draws keep each label's share (largest
    remainder rounding), so the same (task, size, seed) always gives the same ids."""
    size = seed_set_size(cfg, len(train), task)
    rng = random.Random(f"{task}/{size}/{cfg.seed}")
    if not cfg.stratify:
        return rng.sample(train, size)
    by_label = defaultdict(list)
    for example in train:
        by_label[example.label].append(example)
    labels = sorted(by_label)
    quotas = {label: size * len(by_label[label]) / len(train) for label in labels}
    counts = {label: math.floor(quota) for label, quota in quotas.items()}
    for label in sorted(labels, key=lambda lab: counts[lab] - quotas[lab])[: size - sum(counts.values())]:
        counts[label] += 1
    chosen = [example for label in labels for example in rng.sample(by_label[label], counts[label])]
    rng.shuffle(chosen)
    return chosen
