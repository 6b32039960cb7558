"""Stage 1 of every cell (and of the probe): the inputs, prepared once. The composed config is validated
(a bad value fails here, in one line), the strategy built from it, the task's data loaded (its digest is
part of the cell's id) and the seed set S drawn from its training pool (test examples can never be
drawn)."""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from bench.config import BenchConfig, build_strategy, validated
from bench.seed_set import sample_seed_set
from bench.tasks import Example, TaskData, load_task


@dataclass
class Inputs:
    cfg: DictConfig  # as Hydra composed it: what the record and W&B show
    config: BenchConfig  # it validated
    strategy: object  # a bench.strategies.base.Strategy
    data: TaskData
    seed_set: list[Example]


def settled(cfg: DictConfig) -> tuple[BenchConfig, object]:
    """The config validated and the strategy built from it: all the grid planner needs of a cell."""
    config, strategy = validated(cfg), build_strategy(cfg)
    if config.data_dir:
        config.data_dir = str(Path(config.data_dir).resolve())
    return config, strategy


def prepare(cfg: DictConfig) -> Inputs:
    config, strategy = settled(cfg)
    data = load_task(config.task, config.data_dir)
    return Inputs(cfg, config, strategy, data, sample_seed_set(data.train, config.seed_set, config.task.name))
