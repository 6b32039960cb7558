"""One cell of a grid (or a single run): skipped when the results store already holds it, run
otherwise, and recorded either way (`record.json` in its run folder). In a sweep a failing cell is
recorded with its error and the sweep goes on; runners/sweep.py lists the failures at the end."""

import logging
import platform
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bench import distributed, interrupts
from bench.database import ClaimLocks
from bench.errors import BenchError, Interrupted, first_line
from bench.records import CellRecord
from bench.secrets import redact
from bench.store import (
    CellStore,
    cell_config,
    cell_id,
    code_version,
    read_entry,
    reusable,
    writable_folder,
)
from runners.inputs import prepare

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    """Run the job Hydra composed; the exit status (2: the config or data needs fixing)."""
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    multirun = hydra.mode == RunMode.MULTIRUN
    record = CellRecord(cell_id=None, run_dir=str(run_dir), overrides=list(hydra.overrides.task),
                        choices={k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra")},
                        sweep=sweep_of(hydra) if multirun else None)
    started = time.perf_counter()
    ranks = distributed.from_environment()  # torchrun, accelerate launch or SLURM tasks: several ranks
    try:
        if multirun and ranks.main:
            log.info(progress(hydra, record.overrides))
        # a bad value fails here, in one line, before the store is read or anything is written
        inputs = prepare(cfg)
        config, data = inputs.config, inputs.data
        with ranks.stage():  # refused, every rank stops here alike: none waits for rank 0's end of the cell
            distributed.check_sharding(config.compute.sharding, config.compute.processes, ranks)
        threads = set_cpu_threads(config, hydra)
        if not ranks.main:
            from runners import pipeline

            pipeline.follow(inputs, run_dir, ranks)
            return 0
        record.cell_id = cell_id(inputs.cfg, data.digest)
        for folder in ("cells", "stages"):  # a file in the way is found now, not after training
            writable_folder(Path(config.store_dir) / folder, "store_dir")
        # two processes or nodes given one cell: the second waits for the first, then skips it
        waited_before = ClaimLocks.waited_s
        claims = ClaimLocks(Path(config.store_dir) / "cells", config.cache_url, config.cache_outage_s)
        with claims.hold("cell", record.cell_id):
            store, finished = stored(config, record.cell_id)
            if finished is not None:
                skip(record, finished, store, multirun)
                return 0
            record.provenance = {**code_version(), "host": platform.node(), "started": datetime.now(UTC)
                                 .isoformat(), "cpu_threads": threads, "processes": ranks.world}
            execute(inputs, run_dir, record, ranks, started)
            # seconds spent waiting for other processes' claims on this cell and its stages
            record.provenance["claim_wait_s"] = round(ClaimLocks.waited_s - waited_before, 1)
            interrupts.raise_if_stopped()  # a stop a finalizer swallowed: the stages are kept, not the cell
            record.write(run_dir / "record.json")
            store.add(record.to_dict())  # last: only a cell whose record is whole is ever stored as done
    except KeyboardInterrupt:
        raise Interrupted(kept(cfg)) from None
    except Exception as error:  # recorded first; then, outside a sweep, reported as before
        if not ranks.main:  # rank 0 records the cell and says what is wrong; the launcher ends the ranks
            if isinstance(error, BenchError):
                return 2
            raise
        message = record_failure(run_dir, record, error, started)
        if isinstance(error, BenchError):
            log.error(message)
            return 0 if multirun else 2
        if not multirun:
            raise
        log.error(f"cell failed: {message} (traceback in {run_dir / 'error.txt'})")
    finally:
        ranks.release()  # the other ranks wait for rank 0's next stage until told the cell is over
    return 0


def set_cpu_threads(config, hydra) -> str:
    """Set torch's CPU threads before any torch work (on a CPU the count is part of each stage's key:
    results depend on it); what was set and why, for the record."""
    workers = OmegaConf.select(hydra, "launcher.n_jobs")  # the parallel launcher's
    threads, why = distributed.cpu_threads(config.compute.threads, workers)
    distributed.use_cpu_threads(threads)
    return f"{threads} ({why})"


def execute(inputs, run_dir: Path, record: CellRecord, ranks, started: float) -> None:
    """Run the cell's pipeline and fill in its record: the config that ran, the result, the times."""
    from runners import pipeline  # heavy imports only for cells that run

    record.config = cell_config(inputs.cfg)
    pipeline.run(inputs, run_dir, record, ranks)
    record.status, record.skipped, record.seconds = "done", False, time.perf_counter() - started
    record.provenance["finished"] = datetime.now(UTC).isoformat()


def kept(cfg: DictConfig) -> str:
    """What a Ctrl-C leaves: every stage trained and every teacher answer received so far is stored whole
    (files are renamed into place, the cache commits each answer), so the same command resumes there."""
    from bench.teachers.cache import stored_answers

    store_dir = Path(cfg.store_dir)
    stages = sum(1 for _ in (store_dir / "stages").glob("*/result.json"))
    answers = stored_answers(cfg)
    return (f"interrupted: nothing half-written is left; {store_dir} holds {stages} trained stages and "
            f"{'its' if answers is None else answers} teacher answers, which the same command reuses: run it "
            "again to resume")


def stored(config, cell: str) -> tuple[CellStore, dict | None]:
    """The results store, and the cell's finished record where the resume policy lets it be reused."""
    store = CellStore(Path(config.store_dir))
    finished = store.finished(cell) if config.resume != "false" else None
    if finished is not None and not reusable(f"cell {cell}", finished.get("provenance"), config.resume):
        finished = None
    return store, finished


def skip(record: CellRecord, finished: dict, store: CellStore, multirun: bool) -> None:
    """A done cell: this run's record points at the first run's result; a single job prints its summary."""
    replace(CellRecord.from_dict(finished), run_dir=record.run_dir, overrides=record.overrides,
            choices=record.choices, sweep=record.sweep, skipped=True,
            first_run_dir=finished["run_dir"]).write(Path(record.run_dir) / "record.json")
    log.info(f"cell {record.cell_id} is already done (record in {store.root}): skipped; resume=false "
             "reruns it" + ("" if multirun else stored_summary(finished)))


def stored_summary(finished: dict) -> str:
    """A finished cell's summary as its first run printed it (a single job's rerun shows it again)."""
    summary = Path(finished.get("run_dir", "")) / "summary.txt"
    try:
        return "\n" + summary.read_text() if summary.is_file() else ""
    except OSError:
        return ""


def record_failure(run_dir: Path, record: CellRecord, error: Exception, started: float) -> str:
    """The failed cell's record and traceback (a folder that cannot be written loses only these); the
    error's line."""
    said = first_line(error)
    message = said if isinstance(error, BenchError) else f"{type(error).__name__}: {said}"
    record.status, record.error, record.seconds = "failed", message, time.perf_counter() - started
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(redact(traceback.format_exc()))
        record.write(run_dir / "record.json")
    except (OSError, BenchError) as failure:
        log.warning("could not record the failure in %s (%s)", run_dir, failure)
    return message


def sweep_of(hydra) -> dict:
    experiment = hydra.runtime.choices.get("experiment")
    stamp = Path(hydra.sweep.dir).name
    return {"dir": str(Path(hydra.sweep.dir).resolve()), "job_num": hydra.job.num,
            "group": f"{experiment or 'sweep'}-{stamp}"}


def progress(hydra, overrides: list) -> str:
    """`[cell 3 of 12] task=trec ... · so far 1 done, 1 skipped, 0 failed`."""
    sweep_dir = Path(hydra.sweep.dir)
    plan = sweep_dir / "sweep.json"
    planned = read_entry(plan) or {}
    started, total = planned.get("started", 0), planned.get("cells", "?")
    this_run = [p for p in sweep_dir.glob("*/record.json") if p.stat().st_mtime >= started]
    records = [CellRecord.from_dict(r) for p in this_run for r in [read_entry(p)] if isinstance(r, dict)]
    skipped = sum(bool(r.skipped) for r in records)
    failed = sum(r.status == "failed" for r in records)
    done = len(records) - skipped - failed
    return (f"[cell {hydra.job.num + 1} of {total}] {' '.join(overrides)} · so far {done} done, "
            f"{skipped} skipped, {failed} failed")

