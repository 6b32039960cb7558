"""The results store and the stage store: content-addressed folders shared by every run and sweep
(under `store_dir`), so a grid resumes where it stopped and computes what its cells share once.

- `cells/<cell id>.json`: a finished cell's record. The id hashes the cell's resolved config, leaving
  out where things live and how they are logged, so the same experiment has the same id anywhere.
- `stages/<stage key>/`: one trained-and-scored student. The key hashes everything that determines the
  result: student, recipe, evaluation, task, the training examples in order, the stage training started
  from and the examples scored. LLM2LLM's iteration 0 and the `finetune` baseline share one key.
- Every file is written whole or not at all (write, then rename), so `kill -9` leaves nothing half done.
"""

import hashlib
import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

# Config keys that say where things live or how they are logged, not what is computed.
NOT_THE_EXPERIMENT = ("data_dir", "cache_path", "store_dir", "logger", "resume")
STAGE_FORMAT = 1  # bump when what a stage computes changes meaning: old stages are then not reused


def digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_config(cfg: DictConfig) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {key: value for key, value in resolved.items() if key not in NOT_THE_EXPERIMENT}


def cell_id(cfg: DictConfig) -> str:
    return digest(cell_config(cfg))


def write_json(path: Path, payload: Any) -> None:
    """Atomic: a reader never sees half a file, a crash never leaves one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(partial, path)


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with partial.open("w") as out:
        for row in rows:
            out.write(json.dumps(row, default=str) + "\n")
    os.replace(partial, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class CellStore:
    """Finished cells by id: what a rerun skips."""

    def __init__(self, root: Path):
        self.root = Path(root) / "cells"

    def finished(self, cell: str) -> dict | None:
        path = self.root / f"{cell}.json"
        return read_json(path) if path.is_file() else None

    def add(self, record: dict) -> None:
        write_json(self.root / f"{record['cell_id']}.json", record)


class StageStore:
    """Trained-and-scored stages by key. `claim` serialises cells that need the same stage at the same
    time (joblib workers, SLURM array tasks on a shared disk): the second waits, then reuses."""

    def __init__(self, root: Path):
        self.root = Path(root) / "stages"

    @contextmanager
    def claim(self, key: str):
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / f"{key}.lock"):
            yield

    def load(self, key: str, need_weights: bool = False) -> dict | None:
        """The stage's result, or None when it was never computed (or its weights are needed and were
        not kept)."""
        folder = self.root / key
        if not (folder / "result.json").is_file():
            return None
        if need_weights and not (folder / "model.safetensors").is_file():
            return None
        return read_json(folder / "result.json")

    def save(self, key: str, result: dict, model=None) -> None:
        folder = self.root / key
        if model is not None:  # weights first: result.json is what marks the stage done
            from safetensors.torch import save_model

            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f"model.{os.getpid()}.partial"
            save_model(model, str(partial))
            os.replace(partial, folder / "model.safetensors")
        write_json(folder / "result.json", result)

    def weights(self, key: str) -> Path:
        return self.root / key / "model.safetensors"


def code_version() -> dict:
    """The git commit of this checkout (and whether it had uncommitted changes), plus key packages."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):  # an installed copy, not a checkout
        commit, dirty = None, None
    packages = {}
    for name in ("synthbench-llm", "torch", "transformers", "lm-eval", "hydra-core"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"git_commit": commit, "git_dirty": dirty, "packages": packages}


def find_records(folder: Path) -> list[dict]:
    """The cell records under a folder: a sweep's `<job>/record.json`, or a results folder's
    `records/*.json` (or a store's `cells/*.json`); one per cell id, in job order."""
    folder = Path(folder)
    paths = [*folder.rglob("record.json"), *folder.rglob("records/*.json"), *folder.rglob("cells/*.json"),
             *(folder.glob("*.json") if folder.name in ("records", "cells") else ())]
    by_cell = {}
    for path in paths:
        record = read_json(path)
        by_cell.setdefault(record.get("cell_id", str(path)), record)
    records = list(by_cell.values())
    return sorted(records, key=lambda r: ((r.get("sweep") or {}).get("job_num") or 0, r.get("run_dir", "")))
