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
import torch

from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import DATA_DIR, QUICK, REPO
from tests.test_faults import paid, teacher_reply
from tests.test_real_lm import smollm2  # noqa: F401 (the session's real model folder)

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


def sharded_cell(folder: Path, sharding: str, *settings: str) -> tuple[dict, dict]:
    """A fine-tuning cell on 2 CPU ranks (gloo) under compute.sharding: its record and its stage's result."""
    folder.mkdir()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    env = {**os.environ, "BENCH_DATA_DIR": str(DATA_DIR), "BENCH_CACHE_DIR": str(folder / "stores"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, str(REPO / "run.py"), "strategy=finetune", "logger=none",
                             "compute=cpu", "compute.processes=2", f"compute.sharding={sharding}",
                             "student.save=final", *settings, f"hydra.run.dir={folder / 'run'}"],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    [stage] = (folder / "stores").glob("stages/*/result.json")
    return json.loads((folder / "run" / "record.json").read_text()), json.loads(stage.read_text())


@pytest.mark.slow
def test_fsdp_shards_cpu_ranks_and_trains_as_the_unsharded_ranks_do(tmp_path):
    """accelerate leaves FSDP off on CPU ranks; the suite turns it on (bench/training.py SuiteTrainer): the
    weights are split over the 2 ranks while training, gathered whole for scoring, and the stage learns what
    DDP's replicas learn from the same batches."""
    runs = {sharding: sharded_cell(tmp_path / sharding, sharding, *QUICK, "seed_set.size=64")
            for sharding in ("none", "fsdp")}
    (_, ddp_stage), (fsdp, fsdp_stage) = runs["none"], runs["fsdp"]
    assert (ddp_stage["stats"]["sharded_over"], fsdp_stage["stats"]["sharded_over"]) == (1, 2)
    assert fsdp["status"] == "done" and fsdp_stage["stats"]["steps"] == ddp_stage["stats"]["steps"] == 4
    # the same global batches: the same mean loss up to the order of the gradient reductions
    assert fsdp_stage["stats"]["train_loss"] == pytest.approx(ddp_stage["stats"]["train_loss"], rel=1e-4)
    assert fsdp_stage["test"]["accuracy"] == ddp_stage["test"]["accuracy"]


@pytest.mark.slow
def test_the_real_students_sharded_stage_is_stored_whole(smollm2, tmp_path):  # noqa: F811
    """SmolLM2-135M (tied embeddings) sharded over 2 CPU ranks: the saved weights are whole tensors that
    load into the plain model, and score as the stage scored them."""
    record, stage = sharded_cell(tmp_path / "fsdp", "fsdp", "student=smollm2_135m", "task=trec",
                                 "seed_set.size=32", "train.epochs=1", "eval.limit=32")
    assert stage["stats"]["sharded_over"] == 2 and stage["stats"]["steps"] == 2
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "run" / "model")
    base = AutoModelForCausalLM.from_pretrained(smollm2)
    trained = dict(saved.named_parameters())
    assert {n: p.shape for n, p in trained.items()} == {n: p.shape for n, p in base.named_parameters()}
    assert any(not torch.equal(p, trained[n]) for n, p in base.named_parameters())  # trained, not the base
    assert record["iterations"][0]["test_acc"] == stage["test"]["accuracy"]


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
