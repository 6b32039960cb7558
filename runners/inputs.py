"""Stage 1 of every cell (and of the probe): the inputs, prepared once. The composed config is validated
(a bad value fails here, in one line), the strategy built from it, the task's data loaded (its digest is
part of the cell's id) and the seed set S drawn from its training pool (test examples can never be
drawn)."""

import copy
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, open_dict, read_write

from bench.config import BenchConfig, shift_by_replicate, validated
from bench.seed_set import sample_seed_set
from bench.strategies import build_strategy, effective_settings
from bench.tasks import Example, TaskData, load_task


@dataclass
class Inputs:
    cfg: DictConfig  # the config that runs (effective): what config.yaml, the record and W&B show
    config: BenchConfig  # it validated
    strategy: object  # a bench.strategies.base.Strategy
    data: TaskData
    seed_set: list[Example]


def effective(cfg: DictConfig) -> DictConfig:
    """The config a cell runs, built once and never edited after: the strategy's settings in full (its
    class's defaults under the YAML's, bench/strategies), the seeds after the replicate's shift, the data
    folder as an absolute path."""
    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        cfg.strategy = effective_settings(cfg.strategy)
        shift_by_replicate(cfg)
        if cfg.data_dir:
            cfg.data_dir = str(Path(cfg.data_dir).resolve())
    return cfg


def settled(cfg: DictConfig) -> tuple[DictConfig, BenchConfig, object]:
    """The effective config, it validated and the strategy built from it: all the grid planner needs of
    a cell."""
    cfg = effective(cfg)
    return cfg, validated(cfg), build_strategy(cfg.strategy)


def prepare(cfg: DictConfig) -> Inputs:
    cfg, config, strategy = settled(cfg)
    data = load_task(config.task, config.data_dir)
    return Inputs(cfg, config, strategy, data, sample_seed_set(data.train, config.seed_set, config.task.name))
