"""The results store and the stage store: content-addressed folders shared by every run and sweep
(under `store_dir`), so a grid resumes where it stopped and computes what its cells share once.

- `cells/<cell id>.json`: a finished cell's record. The id hashes the cell's resolved config, leaving
  out where things live and how they are logged, so the same experiment has the same id anywhere.
- `stages/<stage key>/`: one trained-and-scored student. The key hashes everything that determines the
  result: student, recipe, evaluation, task, the training examples in order, the stage training started
  from and the examples scored. LLM2LLM's iteration 0 and the `finetune` baseline share one key.
- Every file is written whole or not at all (write, fsync, then rename), so `kill -9` leaves nothing half
  done; an entry that cannot be read (a disk fault, a hand edit) counts as missing and is recomputed, and
  the `.partial` files a killed writer left behind are removed.
- Both keys hold the digest of the task's loaded data, and every entry records the code that computed it:
  `resume=true` reuses an entry from other code with a warning naming what changed, `resume=strict`
  recomputes it, `resume=false` recomputes every cell.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.database import OUTAGE_S, ClaimLocks
from bench.errors import BenchError
from bench.secrets import held_keys, redact

log = logging.getLogger(__name__)
CELL_ID = re.compile(r"^[0-9a-f]{16}$")  # what `digest` makes: the only names a store or report writes
ORPHAN_AGE_S = 3600  # a .partial file this old has no writer left: no write takes an hour

# Config keys that say where things live or how they are logged, not what is computed.
# where and how a cell runs, not what it computes (N GPUs train the same recipe as one)
NOT_THE_EXPERIMENT = ("data_dir", "cache_path", "cache_url", "cache_outage_s", "store_dir", "logger",
                      "resume", "compute")
# bump when what a stage computes changes meaning: old stages are then not reused (2: each scored record
# says whether its generation is an answer at all)
STAGE_FORMAT = 2


def digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_config(cfg: DictConfig) -> dict:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return {key: value for key, value in resolved.items() if key not in NOT_THE_EXPERIMENT}


def cell_id(cfg: DictConfig, data_digest: str) -> str:
    """The cell's content address: its experiment config and the digest of the data it loaded."""
    return digest({**cell_config(cfg), "data": data_digest})


@contextmanager
def replaced_whole(path: Path):
    """Yields a `.partial` path to write; once the block ends it is fsynced and renamed to `path`, so a
    reader never sees half a file. Interrupted (Ctrl-C, an error), the partial file is removed; only a
    SIGKILL can leave one, and `remove_orphans` deletes those."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):  # under a file there is no partial file to remove
            partial.unlink(missing_ok=True)
        raise


def _write_atomically(path: Path, lines) -> None:
    """Write, fsync, rename: a reader never sees half a file, a crash never leaves one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(path) as partial, partial.open("w") as out:
            out.writelines(lines)
    except OSError as error:  # not writable, a folder in the file's place, a file in a folder's place
        raise BenchError(f"cannot write {path} ({error.strerror}: {error.filename}); point store_dir "
                         "(BENCH_CACHE_DIR) and the output folders at a writable place, with nothing in the "
                         "way") from None


def write_json(path: Path, payload: Any) -> None:
    """Atomic, and with anything shaped like an API key redacted (bench/secrets.py)."""
    _write_atomically(path, [json.dumps(redact(payload), indent=2, default=str) + "\n"])


def write_jsonl(path: Path, rows) -> None:
    keys = held_keys()  # looked up once for the file, not once a row
    _write_atomically(path, (json.dumps(redact(row, keys), default=str) + "\n" for row in rows))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_entry(path: Path) -> Any | None:
    """A stored JSON entry, or None (with a warning) when it is missing or cannot be read."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        log.warning("%s cannot be read (%s): treated as missing and computed again", path, error)
        return None


def writable_folder(path: Path, setting: str, alternative: str = " (or BENCH_CACHE_DIR)") -> Path:
    """`path`, created if need be, after checking that a file can be written there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise BenchError(f"{setting}={path} is not a writable folder ({error.strerror}); point "
                         f"{setting}{alternative} at one") from None
    return path


def remove_orphans(folder: Path) -> None:
    """Delete the `.partial` files of writers killed mid-write (older than any write takes)."""
    if folder.is_dir():
        for partial in folder.rglob("*.partial"):
            try:
                if time.time() - partial.stat().st_mtime > ORPHAN_AGE_S:
                    partial.unlink()
            except FileNotFoundError:
                pass  # its writer finished (or another cleaner was first)


class CellStore:
    """Finished cells by id: what a rerun skips."""

    def __init__(self, root: Path):
        self.root = Path(root) / "cells"
        remove_orphans(self.root)

    def finished(self, cell: str) -> dict | None:
        record = read_entry(self.root / f"{cell}.json")
        return record if isinstance(record, dict) and record.get("status") == "done" else None

    def records(self):
        """Every finished cell's record."""
        for path in sorted(self.root.glob("*.json")):
            record = read_entry(path)
            if isinstance(record, dict) and record.get("status") == "done":
                yield record

    def add(self, record: dict) -> None:
        if record.get("status") != "done" or not CELL_ID.match(str(record.get("cell_id"))):
            raise ValueError(f"only finished cells with well-formed ids are stored: {record.get('cell_id')}")
        write_json(self.root / f"{record['cell_id']}.json", record)


class StageStore:
    """Trained-and-scored stages by key. `claim` serialises cells that need the same stage at the same
    time (joblib workers; SLURM array tasks, through the PostgreSQL server of `cache_url`): the second
    waits, then reuses."""

    def __init__(self, root: Path, cache_url: str | None = None, outage_s: float = OUTAGE_S):
        self.root = Path(root) / "stages"
        self.locks = ClaimLocks(self.root, cache_url, outage_s)
        remove_orphans(self.root)

    def claim(self, key: str):
        return self.locks.hold("stage", key)

    def load(self, key: str, need_weights: bool = False) -> dict | None:
        """The stage's result, or None when it was never computed (or its weights are needed and were
        not kept)."""
        folder = self.root / key
        result = read_entry(folder / "result.json")
        if not isinstance(result, dict) or (need_weights and not (folder / "model.safetensors").is_file()):
            return None
        return result

    def save(self, key: str, result: dict, model=None) -> None:
        folder = self.root / key
        if model is not None:  # weights first: result.json is what marks the stage done
            from safetensors.torch import save_model

            folder.mkdir(parents=True, exist_ok=True)
            with replaced_whole(folder / "model.safetensors") as partial:
                save_model(model, str(partial))
        write_json(folder / "result.json", result)

    def weights(self, key: str) -> Path:
        return self.root / key / "model.safetensors"


@lru_cache(maxsize=1)
def code_version() -> dict:
    """What computed a result: a digest of the suite's Python source (bench/, runners/, run.py: edits
    elsewhere, a README say, change nothing), the key packages' versions, and for provenance the git
    commit of this checkout and whether it had uncommitted changes."""
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[1]
    sources = sorted([*root.joinpath("bench").rglob("*.py"), *root.joinpath("runners").rglob("*.py"),
                      *root.glob("run.py")])
    code = hashlib.sha256()
    for path in sources:
        code.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):  # an installed copy, not a checkout
        commit, dirty = None, None
    packages = {}
    for name in ("synthbench-llm", "torch", "transformers", "lm-eval", "hydra-core"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"code_digest": code.hexdigest()[:16], "packages": packages, "git_commit": commit,
            "git_dirty": dirty}


def code_changes(stored: dict | None) -> list[str]:
    """What differs between the code that computed a stored entry and this code, in words ([] if none)."""
    stored, now = stored or {}, code_version()
    changes = []
    if stored.get("code_digest") != now["code_digest"]:
        commit = f", commit {str(stored['git_commit'])[:8]}" if stored.get("git_commit") else ""
        changes.append(f"the suite's code {stored.get('code_digest') or 'unrecorded'}{commit} -> "
                       f"{now['code_digest']}")
    for name, version in now["packages"].items():
        if name != "synthbench-llm" and (stored.get("packages") or {}).get(name) != version:
            changes.append(f"{name} {(stored.get('packages') or {}).get(name)} -> {version}")
    return changes


def reusable(what: str, stored_code: dict | None, resume: str) -> bool:
    """Whether a stored entry may be reused under `resume` (see above): always when this code computed
    it; when other code did, only under resume=true, and either way with a warning naming the change."""
    changes = code_changes(stored_code)
    if not changes:
        return True
    reuse = resume == "true"
    then = "reusing it; resume=strict computes it again" if reuse else f"computing it again (resume={resume})"
    log.warning("%s was computed by other code (%s): %s", what, "; ".join(changes), then)
    return reuse


def find_records(folder: Path) -> list[dict]:
    """The cell records under a folder: a sweep's `<job>/record.json`, or a results folder's
    `records/*.json` (or a store's `cells/*.json`); one per cell id, in job order."""
    folder = Path(folder)
    paths = [*folder.rglob("record.json"), *folder.rglob("records/*.json"), *folder.rglob("cells/*.json"),
             *(folder.glob("*.json") if folder.name in ("records", "cells") else ())]
    by_cell = {}
    for path in paths:
        record = read_entry(path)
        if isinstance(record, dict):
            by_cell.setdefault(record.get("cell_id", str(path)), record)
    records = list(by_cell.values())
    return sorted(records, key=lambda r: ((r.get("sweep") or {}).get("job_num") or 0, r.get("run_dir", "")))
