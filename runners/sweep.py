"""The Hydra callback of every multirun: at the start it counts the cells (for the `[cell k of n]`
progress lines); at the end it says how many cells ran, were skipped or failed (each failure with its
error), writes the report (runners/report.py) and, with logger=wandb, a sweep summary run."""

import sys
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bench.records import CellRecord
from bench.store import find_records, write_json


def grid_cells(params: dict, overrides: list[str]) -> list[list[str]]:
    """Each cell's overrides, as the basic sweeper expands its params and then the command line (which
    wins per key)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return [cell for batch in batches for cell in batch]


def count_cells(config: DictConfig) -> int | None:
    """The basic sweeper's grid size."""
    if "BasicSweeper" not in str(OmegaConf.select(config, "hydra.sweeper._target_")):
        return None  # other sweepers (Optuna, ...) decide as they go
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return len(grid_cells(params, config.hydra.overrides.task))


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        cells = count_cells(config)
        # started: the progress lines count this run's records only (a rerun into the folder finds old ones)
        write_json(sweep_dir / "sweep.json", {"cells": cells, "overrides": list(config.hydra.overrides.task),
                                              "started": time.time()})
        print(
            f"sweep of {cells if cells is not None else 'an open number of'} cells -> {sweep_dir}", flush=True
        )

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from runners.report import build

        sweep_dir = Path(config.hydra.sweep.dir)
        records = find_records(sweep_dir)
        cells = [CellRecord.from_dict(r) for r in records]
        skipped = [r for r in cells if r.skipped]
        failed = [r for r in cells if r.status == "failed"]
        ran = len(cells) - len(skipped) - len(failed)
        trained = sum(r.stages["trained"] for r in cells if r.done and not r.skipped)
        made = build(records, sweep_dir / "report")
        print(f"\nsweep done: {ran} cells ran, {len(skipped)} skipped (already done), {len(failed)} failed; "
              f"{trained} trainings performed; report {made['report']}")
        for record in failed:
            print(f"  failed: {' '.join(record.overrides)}: {record.error} ({record.run_dir})")
        if config.logger.backend == "wandb" and ran:
            from bench.tracking import log_sweep_summary

            where = log_sweep_summary(config.logger, group_of(config, cells), made, sweep_dir)
            if where:
                print(f"W&B sweep summary: {where}")
        if failed:
            sys.exit(1)  # the others finished and are reported; the exit status still says not all did


def group_of(config: DictConfig, records: list[CellRecord]) -> str:
    for record in records:
        if record.sweep:
            return record.sweep["group"]
    return f"sweep-{Path(config.hydra.sweep.dir).name}"
