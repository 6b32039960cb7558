"""The run record: one directory per job holding what went in (resolved config, seed ids), what came
out (metrics, per-example predictions) and what it cost, mirrored to Weights & Biases."""

import json
import os
from pathlib import Path

from bench.config import LoggerConfig
from bench.errors import BenchError
from bench.secrets import redact
from bench.store import write_json, write_jsonl


def wandb_mode(cfg: LoggerConfig) -> str:
    """auto: online only when the user named a project and gave a key; offline otherwise."""
    if cfg.mode == "auto":
        return "online" if cfg.project and os.environ.get("WANDB_API_KEY") else "offline"
    return str(cfg.mode)


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested config as dotted keys (`train.learning_rate`), so runs filter and compare in the W&B UI."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Tracker:
    """Writes the run directory and, with logger.backend=wandb, the W&B run beside it."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict, name: str, group: str | None = None,
                 tags: tuple = ()):
        self.run_dir = run_dir
        self.metrics: dict = {}
        self.wandb = None
        if cfg.backend == "wandb":
            import wandb

            try:
                self.wandb = wandb.init(
                    project=cfg.project or "synthbench",
                    entity=cfg.entity,
                    group=cfg.group or group,
                    tags=[*tags, *cfg.tags],
                    name=name,
                    dir=str(run_dir),
                    mode=wandb_mode(cfg),
                    config=redact(flatten(config)),
                    reinit="finish_previous",
                )
            except wandb.errors.UsageError as error:
                raise BenchError(
                    f"W&B could not start ({error}); set WANDB_API_KEY or use logger.mode=offline"
                ) from None

    @property
    def report_to(self) -> list:
        """What transformers' Trainer should log its loss curve to (the open W&B run, if any)."""
        return ["wandb"] if self.wandb is not None else ["none"]

    def log(self, metrics: dict) -> None:
        self.metrics.update(metrics)
        write_json(self.run_dir / "metrics.json", self.metrics)
        if self.wandb is not None:
            self.wandb.log(metrics)

    def log_predictions(self, split: str, records: list) -> None:
        write_jsonl(self.run_dir / "predictions" / f"{split}.jsonl", records)
        self.log_table(f"{split}/predictions", records)

    def log_table(self, name: str, records: list) -> None:
        """Rows of dicts as a W&B table (nested values as JSON text)."""
        if self.wandb is None or not records:
            return
        import wandb

        columns = list(records[0])
        rows = [[json.dumps(r.get(c)) if isinstance(r.get(c), dict | list) else r.get(c) for c in columns]
                for r in records]
        self.wandb.log({name: wandb.Table(columns=columns, data=redact(rows))})

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
        self.log({f"teacher/{role}/{name}": value for role, line in usage.items() if role != "budget"
                  for name, value in line.items() if name != "faults"})
        return usage

    def finish(self, failed: bool) -> None:
        """Always called, also when the job fails, so multirun jobs never lose their W&B logs."""
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed else 0)


def log_sweep_summary(cfg: LoggerConfig, group: str, made: dict, sweep_dir: Path) -> None:
    """One W&B run per sweep, in the cells' group, holding the aggregated tables and plots."""
    import pandas as pd
    import wandb

    run = wandb.init(
        project=cfg.project or "synthbench",
        entity=cfg.entity,
        group=cfg.group or group,
        job_type="sweep-summary",
        name=f"{cfg.group or group}-summary",
        tags=["sweep-summary", *cfg.tags],
        dir=str(sweep_dir),
        mode=wandb_mode(cfg),
        reinit="finish_previous",
    )
    try:
        for name, item in made.items():
            if isinstance(item, pd.DataFrame):
                run.log({f"tables/{name}": wandb.Table(dataframe=item.astype(str))})
            elif str(item).endswith(".png"):
                run.log({f"plots/{name}": wandb.Image(str(item))})
        run.save(str(made["report"]), base_path=str(Path(made["report"]).parent), policy="now")
    finally:
        run.finish()
