"""The run record: one directory per job holding what went in (resolved config, seed ids), what came
out (metrics, per-example predictions) and what it cost, mirrored to Weights & Biases."""

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.config import LoggerConfig
from bench.errors import BenchError


def write_json(path: Path, payload: Any) -> None:
    """Atomic: a reader never sees half a file, a crash never leaves one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(partial, path)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as out:
        for row in rows:
            out.write(json.dumps(row, default=str) + "\n")
    os.replace(partial, path)


def wandb_mode(cfg: LoggerConfig) -> str:
    """auto: online only when the user named a project and gave a key; offline otherwise."""
    if cfg.mode == "auto":
        return "online" if cfg.project and os.environ.get("WANDB_API_KEY") else "offline"
    if cfg.mode not in ("online", "offline", "disabled"):
        raise BenchError(f"logger.mode={cfg.mode!r}: use auto, online, offline or disabled")
    return cfg.mode


class Tracker:
    """Writes the run directory and, with logger.backend=wandb, the W&B run beside it."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict, name: str):
        self.run_dir = run_dir
        self.metrics: dict = {}
        self.wandb = None
        if cfg.backend == "wandb":
            import wandb

            try:
                self.wandb = wandb.init(
                    project=cfg.project or "synthbench",
                    entity=cfg.entity,
                    group=cfg.group,
                    tags=list(cfg.tags),
                    name=name,
                    dir=str(run_dir),
                    mode=wandb_mode(cfg),
                    config=config,
                    reinit="finish_previous",
                )
            except wandb.errors.UsageError as error:
                raise BenchError(f"W&B could not start ({error}); set WANDB_API_KEY or use logger.mode=offline") from None
        elif cfg.backend != "none":
            raise BenchError(f"logger.backend={cfg.backend!r}: use wandb or none")

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
        self.wandb.log({name: wandb.Table(columns=columns, data=rows)})

    def log_teachers(self, *teachers) -> dict:
        """Queries, tokens and dollars per role, and every answer used (generations.jsonl, which
        teacher=replay reads back). One Teacher object may serve both roles: each is written once."""
        unique = list({id(t): t for t in teachers}.values())
        usage = {role: line for t in unique for role, line in t.usage_report().items()}
        budgets = list({id(t.budget): t.budget for t in unique}.values())
        usage["budget"] = [{"max_queries": b.max_queries, "paid": b.used, "from_cache": b.cached, "spent": b.spent}
                           for b in budgets]
        write_json(self.run_dir / "teacher_usage.json", usage)
        write_jsonl(self.run_dir / "generations.jsonl", (r for t in unique for r in t.records))
        self.log({f"teacher/{role}/{name}": value for role, line in usage.items() if role != "budget"
                  for name, value in line.items() if name != "faults"})
        return usage

    def finish(self, failed: bool) -> None:
        """Always called, also when the job fails, so multirun jobs never lose their W&B logs."""
        if self.wandb is not None:
            self.wandb.finish(exit_code=1 if failed else 0)
