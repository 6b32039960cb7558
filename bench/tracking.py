"""The run record: one directory per job holding what went in (resolved config, seed ids), what came
out (metrics, per-example predictions) and what it cost, mirrored to Weights & Biases the W&B way:
per-iteration metrics on an `iteration` x-axis, each training run's loss curve on its own step axis,
finals and constants in the run summary, generated data as a dataset Artifact."""

import json
import logging
import netrc
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from transformers import TrainerCallback

from bench.config import LoggerConfig
from bench.console import bar
from bench.errors import BenchError
from bench.secrets import redact
from bench.store import write_json, write_jsonl

log = logging.getLogger(__name__)


def has_credentials() -> bool:
    """W&B would log in without asking: WANDB_API_KEY, or the netrc entry `wandb login` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(cfg: LoggerConfig) -> str | None:
    """logger.mode when set; with `auto`, W&B's own WANDB_MODE (None: wandb reads it), else online when
    W&B has credentials and offline when it has none (the run syncs later with `wandb sync`)."""
    if cfg.mode != "auto":
        return str(cfg.mode)
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if has_credentials() else "offline"


def init_arguments(cfg: LoggerConfig) -> dict:
    """What `wandb.init` is told: only what the user set, so WANDB_PROJECT / WANDB_ENTITY / WANDB_MODE
    and a prior `wandb login` work as in any W&B script; the project defaults to `synthbench`."""
    import wandb

    arguments = {"settings": wandb.Settings(silent=True)}  # the suite's own summary says where the run is
    if cfg.project or not os.environ.get("WANDB_PROJECT"):
        arguments["project"] = cfg.project or "synthbench"
    if cfg.entity:
        arguments["entity"] = cfg.entity
    if (mode := wandb_mode(cfg)) is not None:
        arguments["mode"] = mode
    return arguments


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested config as dotted keys (`train.learning_rate`), so runs filter and compare in the W&B UI."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def table(records: list):
    """Rows of dicts as a W&B table (nested values as JSON text)."""
    import wandb

    columns = list(records[0])
    rows = [[json.dumps(r.get(c)) if isinstance(r.get(c), dict | list) else r.get(c) for c in columns]
            for r in records]
    return wandb.Table(columns=columns, data=redact(rows))


class Tracker:
    """Writes the run directory (metrics.json: every value, last one wins) and, with
    logger.backend=wandb, the W&B run beside it."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict, name: str, group: str | None = None,
                 tags: tuple = (), job_type: str = "cell"):
        self.run_dir = run_dir
        self.metrics: dict = {}
        self.wandb = None
        if cfg.backend == "wandb":
            import wandb

            try:
                self.wandb = wandb.init(
                    group=cfg.group or group,
                    job_type=job_type,
                    tags=[*tags, *cfg.tags],
                    name=name,
                    dir=str(run_dir),
                    config=redact(flatten(config)),
                    reinit="finish_previous",
                    **init_arguments(cfg),
                )
            except wandb.errors.UsageError as error:
                raise BenchError(
                    f"W&B could not start ({error}); run `wandb login`, or use logger.mode=offline"
                ) from None
            # per-iteration metrics share the `iteration` axis; loss curves get their own (curve())
            self.wandb.define_metric("iteration")
            for section in ("test", "train", "generation", "stage", "zero_shot", "predictions", "generated"):
                self.wandb.define_metric(f"{section}/*", step_metric="iteration")

    def _keep(self, metrics: dict) -> None:
        self.metrics.update(metrics)
        write_json(self.run_dir / "metrics.json", self.metrics)

    def log_iteration(self, iteration: int, metrics: dict) -> None:
        """Values that change from one iteration (training stage) to the next: history, x = iteration."""
        self._keep({"iteration": iteration, **metrics})
        if self.wandb is not None:
            self.wandb.log({"iteration": iteration, **redact(metrics)})

    def summarize(self, metrics: dict) -> None:
        """Values a run has once (data sizes, finals, cost, diversity): the W&B summary, not history."""
        self._keep(metrics)
        if self.wandb is not None:
            self.wandb.summary.update(redact(metrics))

    def curve(self, iteration: int, label: str = "") -> "TrainingProgress":
        """A Trainer callback for this iteration's training run: its loss curve on its own W&B axis."""
        if self.wandb is not None:
            prefix = f"train_curve/iteration_{iteration}"
            self.wandb.define_metric(f"{prefix}/step")
            self.wandb.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
        return TrainingProgress(self, iteration, label)

    def log_predictions(self, iteration: int, split: str, records: list) -> None:
        write_jsonl(self.run_dir / "predictions" / f"iteration_{iteration}" / f"{split}.jsonl", records)
        self.log_table(iteration, f"predictions/{split}", records)

    def log_table(self, iteration: int, name: str, records: list) -> None:
        if self.wandb is not None and records:
            self.wandb.log({"iteration": iteration, name: table(records)})

    def log_dataset(self, name: str, paths: list[Path], metadata: dict) -> None:
        """Files as a W&B dataset Artifact, produced by this run (its lineage: run -> artifact)."""
        if self.wandb is None or not paths:
            return
        import wandb

        artifact = wandb.Artifact(name, type="dataset", metadata=metadata)
        for path in paths:
            artifact.add_file(str(path), name=str(path.relative_to(self.run_dir)))
        self.wandb.log_artifact(artifact)

    def log_teachers(self, *teachers) -> dict:
        """Queries, tokens and dollars per role, and every answer used (generations.jsonl, which
        teacher=replay reads back). One Teacher object may serve both roles: each is written once."""
        unique = list({id(t): t for t in teachers}.values())
        usage = {role: line for t in unique for role, line in t.usage_report().items()}
        budgets = list({id(t.budget): t.budget for t in unique}.values())
        usage["budget"] = [
            {"max_queries": b.max_queries, "paid": b.used, "from_cache": b.cached, "spent": b.spent}
            for b in budgets
        ]
        write_json(self.run_dir / "teacher_usage.json", usage)
        write_jsonl(self.run_dir / "generations.jsonl", (r for t in unique for r in t.records))
        self.summarize({f"teacher/{role}/{name}": value for role, line in usage.items() if role != "budget"
                        for name, value in line.items() if name != "faults"})
        return usage

    def where(self) -> str | None:
        """How to see the W&B run: its URL online, the `wandb sync` command offline."""
        if self.wandb is None or self.wandb.disabled:
            return None
        return f"wandb sync {self.wandb.settings.sync_dir}" if self.wandb.offline else self.wandb.url

    def finish(self, failed: bool) -> None:
        """Always called, also when the job fails, so multirun jobs never lose their W&B logs."""
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed else 0)


class TrainingProgress(TrainerCallback):
    """One training run as the suite shows it: a step bar on a terminal; the loss points in run.log (at
    debug level) and on W&B under `train_curve/iteration_<i>/` (x = this run's step, so iterations'
    curves never append to one another)."""

    def __init__(self, tracker: Tracker, iteration: int, label: str):
        self.tracker, self.label, self.bar = tracker, label, None
        self.prefix = f"train_curve/iteration_{iteration}"

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = bar(state.max_steps, f"{self.label}training", "step",
                       disable=not state.is_world_process_zero)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()

    def on_log(self, args, state, control, logs=None, **kwargs):
        points = {k: v for k, v in (logs or {}).items() if k in ("loss", "grad_norm", "learning_rate")}
        if not points or not state.is_world_process_zero:
            return
        log.debug("step %d/%d: %s", state.global_step, state.max_steps,
                  ", ".join(f"{k} {v:.4g}" for k, v in points.items()))
        if self.tracker.wandb is not None:
            self.tracker.wandb.log({f"{self.prefix}/step": state.global_step,
                                    **{f"{self.prefix}/{k}": v for k, v in points.items()}})


def log_sweep_summary(cfg: LoggerConfig, group: str, made: dict, sweep_dir: Path) -> str | None:
    """One W&B run per sweep, in the cells' group, holding the aggregated tables and plots; returns
    where to see it."""
    import pandas as pd
    import wandb

    tracker = Tracker(sweep_dir, cfg, {}, name=f"{cfg.group or group}-summary", group=group,
                      tags=("sweep-summary",), job_type="sweep-summary")
    run = tracker.wandb
    try:
        for name, item in made.items():
            if isinstance(item, pd.DataFrame):
                run.log({f"tables/{name}": wandb.Table(dataframe=report_frame(item))})
            elif str(item).endswith(".png"):
                run.log({f"plots/{name}": wandb.Image(str(item))})
        shutil.copy(made["report"], run.dir)  # files in the run's folder are uploaded with it
        return tracker.where()
    finally:
        tracker.finish(failed=False)


def report_frame(frame):
    """A report table as W&B takes it: columns of numbers (the report prints them as text, "0.125") become
    numbers again, sortable and plottable; text stays text ("0.62 ± 0.01"), lists become JSON text."""
    import pandas as pd

    frame = frame.copy()
    frame.columns = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in frame.columns]
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            numbers = pd.to_numeric(frame[column], errors="coerce")
            if numbers.notna().sum() == frame[column].notna().sum():
                frame[column] = numbers
            else:
                frame[column] = frame[column].map(lambda v: v if isinstance(v, str) else json.dumps(v),
                                                  na_action="ignore")
    return frame
