"""One cell on two CPU processes (torchrun, gloo) standing in for two GPUs: rank 0 alone queries the
teacher and writes the record and the W&B run; the stages train data-parallel; scoring is sharded by
lm-eval and counted once; the result matches one process's."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import DATA_DIR, QUICK, REPO
from tests.test_faults import paid, teacher_reply

CELL = [*QUICK, "strategy=llm2llm_quick", "seed_set.size=96", "train.epochs=2", "eval.limit=96",
        "train.batching=padded",  # random batches: the same examples in them on one rank or two
        "logger=wandb", "teacher=openai", "teacher.backend.api_key_env=null",
        "teacher.backend.model=local"]


def run_cell(folder: Path, server: LocalChatServer, processes: int) -> dict:
    """One cell, as `torchrun --standalone --nproc_per_node N run.py ...` (or plain python for one)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                "--standalone"] if processes > 1 else [sys.executable]
    run_cli_args = [*CELL, f"teacher.backend.base_url={server.base_url}", f"hydra.run.dir={folder / 'run'}"]
    env = {**os.environ, "BENCH_DATA_DIR": str(DATA_DIR), "BENCH_CACHE_DIR": str(folder / "stores"),
           "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, str(REPO / "run.py"), *run_cli_args], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    records = list(folder.rglob("record.json"))
    assert len(records) == 1, records  # rank 0's alone
    return json.loads(records[0].read_text())


@pytest.mark.slow
def test_fsdp_on_cpu_ranks_is_refused_in_one_line_not_trained_unsharded(tmp_path):
    """accelerate shards only on accelerators: on CPU ranks the Trainer would quietly train DDP replicas."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    env = {**os.environ, "BENCH_DATA_DIR": str(DATA_DIR), "BENCH_CACHE_DIR": str(tmp_path / "stores"),
           "WANDB_MODE": "offline"}
    result = subprocess.run([*launcher, str(REPO / "run.py"), *QUICK, "strategy=finetune", "compute=cpu",
                             "compute.processes=2", "compute.sharding=fsdp",
                             f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    assert "compute.sharding=fsdp on CPU ranks would train unsharded" in errors[0]
    assert not list((tmp_path / "stores").glob("stages/*/result.json"))  # refused before any training


@pytest.mark.slow
def test_a_cell_on_two_processes_queries_records_and_logs_once_and_scores_as_one_process(tmp_path):
    runs = {}
    for processes in (1, 2):
        folder = tmp_path / f"{processes}_processes"
        folder.mkdir()
        with LocalChatServer(reply=teacher_reply) as server:
            record = run_cell(folder, server, processes)
            runs[processes] = record, paid(server), folder
    (one, _, _), (two, _, folder) = runs[1], runs[2]
    assert two["status"] == "done"
    assert len(list(folder.rglob("offline-run-*"))) == 1  # one W&B run
    for record, paid_requests, _ in runs.values():
        # each wrong seed example of a round asked the teacher once: rank 0 asked, the other rank did not
        wrong = sum(
            round(96 * (1 - i["scored_acc"])) for i in record["iterations"] if i["scored_acc"] is not None
        )
        assert paid_requests == wrong == record["cost"]["teacher"]["requests"] > 0
    # iteration 0 trains on 96 = 6 global batches of 16: the same batches on 1 or 2 processes, so the
    # same model, the same wrong seed examples and the same teacher requests
    first = [
        (
            r["iterations"][0]["scored_acc"],
            r["iterations"][0]["test_acc"],
            r["iterations"][1]["generation"]["requested"],
        )
        for r in (one, two)
    ]
    assert first[0] == first[1]
    # later sets do not split evenly: DDP pads the last batch with repeated examples, so they agree
    # within noise, not exactly
    for a, b in zip(one["iterations"], two["iterations"]):
        noise = 3 * math.hypot(a["test_acc_stderr"], b["test_acc_stderr"])
        assert abs(a["test_acc"] - b["test_acc"]) <= noise, (a, b)
    # the whole test split scored, once: every example of it in the predictions, none twice
    predictions = [
        json.loads(line)
        for line in (folder / "run" / "predictions" / "iteration_0" / "test.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == len({p["id"] for p in predictions}) == 96


def test_each_process_takes_its_share_of_the_cores_unless_told(monkeypatch):
    from bench import distributed

    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(distributed, "USER_OMP_THREADS", "")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert distributed.cpu_threads(None) == (8, "8 cores")
    assert distributed.cpu_threads(None, launcher_workers=2) == (4, "8 cores / 2 processes")
    assert distributed.cpu_threads(None, launcher_workers=-1) == (1, "8 cores / 8 processes")  # one per core
    assert distributed.cpu_threads(None, launcher_workers=16) == (1, "8 cores / 16 processes")
    monkeypatch.setattr(distributed, "USER_OMP_THREADS", "3")  # a process alone takes OMP_NUM_THREADS...
    assert distributed.cpu_threads(None) == (3, "OMP_NUM_THREADS")
    # ...but not the value a launcher set for its workers (joblib: cores / n_jobs; torchrun: 1)
    assert distributed.cpu_threads(None, launcher_workers=2) == (4, "8 cores / 2 processes")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun / accelerate: four ranks on this machine
    assert distributed.cpu_threads(None) == (2, "8 cores / 4 processes")
    assert distributed.cpu_threads(5) == (5, "compute.threads")  # compute.threads over all of it
