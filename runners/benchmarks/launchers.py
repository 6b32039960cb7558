"""Two cells of the smoke preset run sequentially and under the parallel launcher (joblib, 2 workers),
each way with a fresh store, timed as wholes in one run. Threads are sized per process
(compute.threads unset: cores / workers); the last row forces every worker to take all the cores, as
each did before the sizing. Cells trained with the same thread count must score the same.

    python -m runners.benchmarks.launchers [overrides, e.g. strategy=finetune,llm2llm_quick]

Run it with nothing else on the machine: it measures how processes share the cores."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.records import CellRecord
from bench.store import find_records

REPO = Path(__file__).resolve().parents[2]
CELLS = ["-m", "experiment=smoke", "strategy=finetune,answer_augmentation", "logger=none"]
WAYS = [("sequential, 1 thread", ["compute.threads=1"]),
        ("sequential, threads sized (all cores)", []),
        ("parallel launcher, threads sized (cores / 2)", ["hydra/launcher=parallel"]),
        ("parallel launcher, each worker all cores",
         ["hydra/launcher=parallel", f"compute.threads={len(os.sched_getaffinity(0))}"])]


def run_way(folder: Path, overrides: list[str]) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # sized by the suite, not the shell
    env["BENCH_CACHE_DIR"] = str(folder / "store")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO / "run.py"), *CELLS, *overrides,
                             f"hydra.sweep.dir={folder / 'sweep'}"], cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(overrides) or 'sequential'} failed:\n{result.stderr[-2000:]}")
    records = [CellRecord.from_dict(r) for r in find_records(folder / "sweep")]
    return seconds, {r.strategy: (r.metrics["final/test_acc"], r.provenance["cpu_threads"]) for r in records}


def main(extra: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for n, (label, overrides) in enumerate(WAYS):
            rows.append((label, *run_way(Path(scratch) / str(n), [*overrides, *extra])))
    cores = len(os.sched_getaffinity(0))
    print(f"\n2 cells of experiment=smoke ({', '.join(rows[0][2])}) on {cores} cores\n")
    print(f"{'way':<46} {'wall s':>7}  per cell: test accuracy (threads)")
    by_threads = {}
    for label, seconds, cells in rows:
        print(f"{label:<46} {seconds:>7.1f}  "
              + "; ".join(f"{name} {acc:.3f} ({threads})" for name, (acc, threads) in cells.items()))
        for name, (acc, threads) in cells.items():
            by_threads.setdefault((name, threads.split()[0]), set()).add(acc)
    same = all(len(accuracies) == 1 for accuracies in by_threads.values())
    print(f"\ncells trained with the same thread count score the same: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
    else:
        main(sys.argv[1:])
