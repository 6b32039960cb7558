"""Sweeps through `python run.py -m`: presets, launchers, resuming, shared stages, the report and the
advisor. The sweeps run the real pipeline at the QUICK size."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from bench.config import validated
from bench.store import digest, find_records
from runners import advise, report
from runners.report.__main__ import main as report_main
from runners.sweep import count_cells, grid_cells
from tests.conftest import DATA_DIR, QUICK, REPO, run_cli
from tests.wandb_file import read_run

PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
TINY = ["student=tiny", "train=scratch", "teacher=simulated"]  # the README's tiny override


def grid(preset: str) -> list[list[str]]:
    """The cells `python run.py -m experiment=<preset> <TINY>` launches, as override lists."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}", *TINY], return_hydra_config=True)
    return grid_cells(cfg.hydra.sweeper.get("params") or {}, [f"experiment={preset}", *TINY])


# the budget study's grid composes hundreds of cells: half a minute, so with the slow tests
@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p == "budget_strategies" else p
                                    for p in PRESETS])
def test_every_preset_composes_cell_by_cell(preset):
    cells = grid(preset)
    for overrides in cells:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            config = validated(compose("config", overrides=[f"data_dir={DATA_DIR}", *overrides]))
        assert config.student.name == "tiny" and config.teacher.name == "simulated"
    # the budget grid: 3 strategies x 3 seed sizes x 12 BRs x both readings of count_augmenter
    expected = {"llm2llm": 5 * 4 * 2, "llm2llm_ablations": 4, "budget_strategies": 3 * 3 * 12 * 2,
                "smoke": 4}
    if preset in expected:
        assert len(cells) == expected[preset]


def test_paper_presets_keep_the_papers_models_without_the_tiny_override():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        llm2llm = compose("config", overrides=["experiment=llm2llm"])
        budget = compose("config", overrides=["experiment=budget_strategies"])
    assert (llm2llm.student.pretrained, llm2llm.teacher.backend.model) == (
        "meta-llama/Llama-2-7b-hf",
        "gpt-3.5-turbo",
    )
    assert budget.student.pretrained == "meta-llama/Llama-2-7b-chat-hf"
    assert (
        budget.teacher.backend.model == "meta-llama/Llama-3.1-70B-Instruct"
        and budget.train.learning_rate == 4e-5
    )


def sweep(tmp_path, name, *args, **env):
    return run_cli(
        "-m", "experiment=smoke", *QUICK, f"hydra.sweep.dir={tmp_path / name}", *args, cwd=tmp_path, **env
    )


@pytest.mark.slow
def test_parallel_sweep_shares_stages_and_a_rerun_skips_everything(tmp_path):
    # OMP_NUM_THREADS unset: each of the launcher's 2 workers takes half the cores, not all of them
    first = sweep(tmp_path, "first", "hydra/launcher=parallel", "logger=wandb", OMP_NUM_THREADS="")
    assert first.returncode == 0, first.stderr[-3000:]
    records = find_records(tmp_path / "first")
    assert len(records) == 4 and all(r["status"] == "done" for r in records)
    cores = len(os.sched_getaffinity(0))
    shares = {r["provenance"]["cpu_threads"] for r in records}
    assert shares == {f"{max(1, cores // 2)} ({cores} cores / 2 processes)"}
    by_strategy = {r["strategy"]: r for r in records}
    # LLM2LLM's iteration 0 is the finetune cell's stage: one training for both, whichever ran first
    assert by_strategy["llm2llm"]["stages"]["keys"][0] == by_strategy["finetune"]["stages"]["keys"][0]
    trained = sum(r["stages"]["trained"] for r in records)
    stages = sum(len(r["stages"]["keys"]) for r in records)
    assert trained == stages - 1 == 5
    assert {r["provenance"]["git_commit"] is not None for r in records} == {True}
    report_dir = tmp_path / "first" / "report"
    text = (report_dir / "report.md").read_text()
    assert "| trec | 48 |" in text and "answer_augmentation" in text and "llm2llm_quick gain" in text
    # each budgeted strategy ran at one BR only: no accuracy-vs-BR line to draw (the table has them)
    assert not (report_dir / "accuracy_vs_budget_ratio.png").exists()
    assert (report_dir / "accuracy_per_iteration.png").stat().st_size > 10_000
    assert "sweep done: 4 cells ran, 0 skipped" in first.stdout
    assert "[cell 4 of 4]" in first.stdout + first.stderr
    # W&B: every cell a run in the sweep's group with a flattened config, plus a summary run
    # (the offline .wandb file holds the run's protobuf records: its strings appear as they are)
    group = records[0]["sweep"]["group"].encode()
    assert group.startswith(b"smoke-") and {r["sweep"]["group"] for r in records} == {group.decode()}
    cell_run = next((tmp_path / "first" / "1" / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert group in cell_run and b"train.learning_rate" in cell_run and b"llm2llm" in cell_run
    summary = next((tmp_path / "first" / "wandb").glob("offline-run-*"))
    summary_run = read_run(next(summary.glob("run-*.wandb")))
    assert summary_run["job_type"] == "sweep-summary" and (summary / "files" / "report.md").is_file()
    assert "wandb:" not in first.stdout + first.stderr and f"wandb sync {summary}" in first.stdout
    assert group in next(summary.glob("run-*.wandb")).read_bytes()
    cells = json.loads(next(summary.glob("files/media/table/tables/cells_*.table.json")).read_text())
    accuracy = [row[cells["columns"].index("accuracy")] for row in cells["data"]]
    assert all(isinstance(a, float) for a in accuracy)  # a real table: numbers, not their printed text
    verdicts = json.loads(next(summary.glob("files/media/table/tables/comparisons_*.table.json")).read_text())
    assert "verdict" in verdicts["columns"] and len(verdicts["data"]) >= 3  # each strategy vs fine-tuning
    assert (
        "llm2llm_quick gain"
        in next(summary.glob("files/media/table/tables/llm2llm_*.table.json")).read_text()
    )
    plots = {p.name.rsplit("_", 2)[0] for p in summary.glob("files/media/images/plots/*.png")}
    assert "accuracy_per_iteration" in plots

    again = sweep(tmp_path, "again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "sweep done: 0 cells ran, 4 skipped (already done), 0 failed; 0 trainings performed" in again.stdout
    )
    rerun = find_records(tmp_path / "again")
    assert [r["metrics"]["final/test_acc"] for r in rerun] == [
        r["metrics"]["final/test_acc"] for r in records
    ]
    assert "| trec | 48 |" in (tmp_path / "again" / "report" / "report.md").read_text()
    # once more into the same folder: its progress counts this run's cells, not the records already there
    third = sweep(tmp_path, "again")
    assert "[cell 1 of 4] " in third.stdout + third.stderr
    assert "so far 0 done, 0 skipped, 0 failed" in third.stdout + third.stderr


@pytest.mark.slow
def test_replicates_never_share_weights_and_llm2llm_shares_its_replicates_fine_tuning(tmp_path):
    result = run_cli("-m", *QUICK, "strategy=finetune,llm2llm_quick", "replicate=0,1",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                     BENCH_CACHE_DIR=str(tmp_path / "stores"))
    assert result.returncode == 0, result.stderr[-3000:]
    cells = {(r["strategy"], r["config"]["replicate"]): r for r in find_records(tmp_path / "sweep")}
    assert len(cells) == 4
    tuned = [cells["finetune", r]["stages"] for r in (0, 1)]
    assert [s["trained"] for s in tuned] == [1, 1] and tuned[0]["keys"] != tuned[1]["keys"]  # own weights
    for replicate in (0, 1):  # LLM2LLM's iteration 0 is its own replicate's fine-tuning stage
        llm2llm = cells["llm2llm", replicate]["stages"]
        assert llm2llm["reused"] == 1 and llm2llm["keys"][0] == tuned[replicate]["keys"][0]
    report = (tmp_path / "sweep" / "report" / "report.md").read_text()
    assert "## Every comparison" in report and "| 2 |" in report  # the two replicates, paired


def cache_rows(stores: Path) -> int:
    with sqlite3.connect(stores / "generations.sqlite") as db:
        return db.execute("select count(*) from generations").fetchone()[0]


@pytest.mark.slow
def test_a_sweep_killed_mid_cell_resumes_to_the_uninterrupted_result(tmp_path):
    reference = sweep(tmp_path, "reference", BENCH_CACHE_DIR=str(tmp_path / "reference-stores"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    stores = tmp_path / "stores"
    env = {**os.environ, "BENCH_DATA_DIR": str(DATA_DIR), "BENCH_CACHE_DIR": str(stores)}
    killed = subprocess.Popen([sys.executable, str(REPO / "run.py"), "-m", "experiment=smoke", *QUICK,
                               f"hydra.sweep.dir={tmp_path / 'killed'}"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    mid_llm2llm = tmp_path / "killed" / "1" / "generated" / "iteration_1.jsonl"  # round 1 asked, not trained
    deadline = time.monotonic() + 300
    while not mid_llm2llm.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert mid_llm2llm.exists()
    paid_before_the_kill = cache_rows(stores)  # every paid answer is in the cache before it is used

    resumed = sweep(tmp_path, "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = {r["strategy"]: r for r in find_records(tmp_path / "resumed")}
    expected = {r["strategy"]: r for r in find_records(tmp_path / "reference")}
    assert runs["finetune"]["skipped"] and not runs["llm2llm"]["skipped"]
    assert runs["llm2llm"]["stages"]["reused"] == 1  # iteration 0 survived the kill
    for strategy, record in expected.items():
        assert runs[strategy]["iterations"] == [
            {**i, "train_seconds": r["train_seconds"], "reused": r["reused"]}
            for i, r in zip(record["iterations"], runs[strategy]["iterations"])
        ]
    paid_after = sum(
        b["paid"] for r in runs.values() if not r["skipped"] for b in r["cost"].get("budget", [])
    )
    paid_reference = sum(b["paid"] for r in expected.values() for b in r["cost"].get("budget", []))
    assert paid_before_the_kill + paid_after == paid_reference  # nothing paid twice
    assert runs["llm2llm"]["cost"]["budget"][0]["from_cache"] > 0


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path):
    result = run_cli("-m", *QUICK, "strategy=finetune", "train.epochs=0.2", "seed_set.size=48,100000",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "sweep done: 1 cells ran, 0 skipped (already done), 1 failed" in result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("  failed: ")]
    assert len(failures) == 1 and "seed_set.size=100000 exceeds the 5442 training examples" in failures[0]
    failed = json.loads((tmp_path / "sweep" / "1" / "record.json").read_text())
    assert failed["status"] == "failed" and "choose seed_set.size<=" in failed["error"]
    assert "## Failed cells" in (tmp_path / "sweep" / "report" / "report.md").read_text()


def fake_slurm(tmp_path: Path) -> dict:
    """An `sbatch` on PATH that keeps the submission script and stops there, and an `sinfo` describing a
    GPU partition (one node: 64 CPUs, 512 GB, 8 GPUs) for the launcher's check: the GPU presets'
    submission scripts, which the tests' real one-node CPU cluster (tests/test_slurm.py) cannot run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\n"
                                    "echo 'dry run: submission recorded' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    (bin_dir / "sinfo").write_text('#!/bin/sh\ncase "$*" in\n'
                                   '*-N*) echo "gpu01|64|512000|gpu:h100:8(S:0-1)";;\n'
                                   '*) echo "gpu*|up";;\nesac\n')
    (bin_dir / "sinfo").chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it before submitting
    (bin_dir / "srun").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_the_slurm_launcher_submits_one_array_job(tmp_path):
    """Up to job creation: the real Hydra -> submitit -> sbatch path."""
    result = run_cli("-m", *QUICK, "strategy=finetune", "seed_set.seed=0,1,2", "hydra/launcher=slurm",
                     "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                     **fake_slurm(tmp_path))
    assert "dry run: submission recorded" in result.stderr
    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "#SBATCH --array=0-2%3",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=128GB",
        "#SBATCH --time=720",
        "#SBATCH --signal=USR2@",
    ):
        assert line in script
    assert "submitit.core._submit" in script


def test_a_cpu_cell_asks_slurm_for_no_gpu(tmp_path):
    result = run_cli("-m", *QUICK, "strategy=finetune", "compute=cpu", "hydra/launcher=slurm",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, **fake_slurm(tmp_path))
    assert "dry run: submission recorded" in result.stderr, result.stderr[-2000:]
    script = (tmp_path / "submitted.sh").read_text()
    assert "gpus" not in script and "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=8GB" in script


ONE_7B_CELL = ("experiment=llm2llm", "task=trec", "seed_set.fraction=0.01", "strategy=finetune,llm2llm",
               "hydra/launcher=slurm", "hydra.launcher.partition=gpu")


def test_a_7b_preset_asks_slurm_for_four_gpus_a_task_each(tmp_path):
    result = run_cli("-m", *ONE_7B_CELL, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                     **fake_slurm(tmp_path))
    assert "dry run: submission recorded" in result.stderr, result.stderr[-2000:]
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --array=0-1%2", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4"):
        assert line in script
    assert "srun" in script  # one process a task: each becomes a rank of the cell (bench/distributed.py)


def test_a_7b_full_fine_tune_on_one_gpu_is_refused_before_submission(tmp_path):
    result = run_cli("-m", *ONE_7B_CELL, "compute=1gpu", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     cwd=tmp_path, **fake_slurm(tmp_path))
    assert result.returncode == 2
    assert not (tmp_path / "submitted.sh").exists()
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 2 cells cannot fit 1 GPU(s) of 80 GiB")
    assert "it would fit with compute.gpus=2 compute.sharding=fsdp" in error


FAMILY = {"finetune": "finetune", "llm2llm": "llm2llm", "answer_augmentation": "budgeted",
          "question_rephrase": "budgeted", "new_question": "budgeted"}


def fake_record(strategy, accuracy, seed=0, size=100, ratio=None, task="trec", variant=None, iterations=(),
                also=(), config=None):
    budget = (
        [{"max_queries": ratio * size, "paid": ratio * size, "from_cache": 0, "spent": ratio * size}]
        if ratio
        else []
    )
    return {
        "cell_id": digest(f"{strategy}-{variant}-{seed}-{size}-{ratio}-{task}-{also}-{config}"),
        "status": "done",
        "strategy": strategy,
        "family": FAMILY[strategy],
        "seed_set_size": size,
        "overrides": [f"strategy={variant or strategy}", f"seed_set.seed={seed}", *also],
        "choices": {"strategy": variant or strategy},
        "run_dir": "x",
        "config": {
            "task": {"name": task},
            "student": {"name": "tiny"},
            "teacher": {"name": "simulated", "role": "simulation"},
            "seed_set": {"seed": seed, "size": size},
            **(config or {}),
        },
        "metrics": {"final/test_acc": accuracy, "final/test_acc_stderr": 0.02},
        "iterations": [{"test_acc": a} for a in iterations],
        "cost": {"budget": budget},
        "stages": {"trained": 1, "reused": 0},
        "seconds": 10.0,
    }


def test_report_tables_have_the_papers_shape(tmp_path):
    records = [fake_record("finetune", 0.50, seed=0), fake_record("finetune", 0.54, seed=1),
               fake_record("llm2llm", 0.60, seed=0, iterations=(0.5, 0.6)),
               fake_record("llm2llm", 0.64, seed=1, iterations=(0.54, 0.64)),
               fake_record("answer_augmentation", 0.7, ratio=1), fake_record("new_question", 0.6, ratio=1),
               fake_record("answer_augmentation", 0.7, ratio=30), fake_record("new_question", 0.8, ratio=30)]
    made = report.build(records, tmp_path)
    llm2llm = made["llm2llm"].iloc[0]
    # the same +10 points on both seed sets: a paired difference without spread, which the t-test cannot
    # judge (it read p = 0, "helps"); the exact sign-flip test over 2 pairs gives p = 0.5
    assert llm2llm["finetune"] == "0.520 ± 0.028 (n=2)"
    assert llm2llm["llm2llm gain"].startswith("+10.0 pts: can't tell")
    comparison = made["comparisons"].iloc[0]
    assert comparison.test == "exact sign-flip (no spread)" and comparison.p == "0.500"
    budget = made["budget_strategies"]
    assert list(budget["best (paired t-test, 5%)"]) == [  # one cell each: never a winner
        "none (can't tell (1 replicate) over new_question)",
        "none (can't tell (1 replicate) over answer_augmentation)"]
    assert list(budget.budget_ratio) == [
        1,
        30,
    ]
    assert (tmp_path / "budget_strategies.csv").read_text().startswith("task,seed_size,budget_ratio,")
    assert list(budget.finetune) == ["0.520 ± 0.028 (n=2)"] * 2  # the baseline beside each BR
    # the plots: PNG and SVG (its text kept as text), the fine-tuning baseline dashed, BR ticks at the BRs
    assert made["accuracy_vs_budget_ratio"].is_file() and made["accuracy_per_iteration"].is_file()
    budget_plot = made["accuracy_vs_budget_ratio"].with_suffix(".svg").read_text()
    assert "fine-tuning only" in budget_plot and ">30<" in budget_plot and ">10<" not in budget_plot
    assert "fine-tuning only, |S| = 100" in made["accuracy_per_iteration"].with_suffix(".svg").read_text()
    # a results folder's records are found from the folder or from its records/ itself
    for record in records:
        (tmp_path / "results" / "records").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "records" / f"{record['cell_id']}.json").write_text(json.dumps(record))
    assert len(find_records(tmp_path / "results")) == len(find_records(tmp_path / "results" / "records")) == 8


def test_the_report_pools_cells_over_seeds_only(tmp_path):
    """Cells that differ in a swept key the table does not show (temperature here) stay apart; only
    cells that differ in their seed are pooled into mean ± std."""
    records = [fake_record("new_question", accuracy, seed=seed, ratio=4, also=[f"strategy.temperature={t}"])
               for t, accuracies in (("0.2", (0.4, 0.5)), ("1.8", (0.7, 0.8)))
               for seed, accuracy in enumerate(accuracies)]
    table = report.build(records, tmp_path)["budget_strategies"]
    assert list(table.setting) == ["strategy.temperature=0.2", "strategy.temperature=1.8"]
    assert list(table.new_question) == ["0.450 ± 0.071 (n=2)", "0.750 ± 0.071 (n=2)"]


# what LLM2LLM's paper ran: cells of this setting are comparable with its numbers
LLM2LLM_SETTING = {"student": {"name": "7b", "pretrained": "meta-llama/Llama-2-7b-hf"},
                   "teacher": {"name": "openai", "backend": {"model": "gpt-3.5-turbo"}},
                   "strategy": {"iterations": 10},
                   "train": {"learning_rate": 2e-5, "effective_batch_size": 128, "epochs": 3}}


def test_a_paper_value_beside_a_cell_of_another_setting_shows_no_difference(tmp_path):
    records = [fake_record("finetune", 0.50), fake_record("llm2llm", 0.80),
               fake_record("finetune", 0.50, size=200), fake_record("llm2llm", 0.60, size=200)]
    papers = report.build(records, tmp_path)["papers"].set_index("quantity")
    trec = papers.loc[papers.index.str.startswith("trec:")]
    # a row per |S| and teacher, never the largest gain of them picked out
    assert list(trec.reproduced) == ["+30.0", "+10.0"] and list(trec.index.str.extract(r"\|S\| (\d+)")[0]) \
        == ["100", "200"]
    trec = trec.iloc[0]
    # one replicate: no verdict, so no claim; and a tiny student with the simulated teacher is not the
    # paper's Llama-2-7B with gpt-3.5-turbo: no Δ
    assert (trec["paper"], trec["verdict"], trec["claim"]) == ("+52.6", "can't tell (1 replicate)",
                                                               "not shown (can't tell)")
    assert trec["Δ"].startswith("not comparable: ") and "-22.6" not in trec["Δ"]
    assert "student_model tiny (paper meta-llama/Llama-2-7b-hf)" in trec["Δ"]
    assert "teacher_model simulated (paper gpt-3.5-turbo)" in trec["Δ"]
    assert "seed_form size (paper fraction)" in trec["Δ"] and "recipe not recorded" in trec["Δ"]
    gsm8k = papers.loc[papers.index.str.startswith("gsm8k:")].iloc[0]
    assert (gsm8k["reproduced"], gsm8k["Δ"]) == ("n/a", "n/a")  # not measured: never a number
    assert "## The papers' numbers" in (tmp_path / "report.md").read_text()
    diversity = papers.loc[papers.index.str.startswith("sign of the correlation")].iloc[0]
    assert (diversity["paper"], diversity["reproduced"]) == ("positive", "n/a")  # no diversity scores here


def test_a_paper_value_beside_cells_of_its_setting_shows_the_difference(tmp_path):
    def cell(strategy, accuracy):
        return fake_record(strategy, accuracy, config={**LLM2LLM_SETTING, "seed_set": {"seed": 0,
                                                                                         "fraction": 0.01}})
    papers = report.build([cell("finetune", 0.50), cell("llm2llm", 0.80)], tmp_path)["papers"]
    trec = papers.set_index("quantity").loc[lambda t: t.index.str.startswith("trec:")].iloc[0]
    assert (trec["reproduced"], trec["verdict"], trec["Δ"]) == ("+30.0", "can't tell (1 replicate)", "-22.6")


def budget_records(crossings: dict, setting: dict | None = None, seeds: int = 3) -> list[dict]:
    """Answer augmentation at 0.5 everywhere; New Question 10 points below it, and from the BR `crossings`
    gives for each reading of count_augmenter 10 points above; `seeds` seed sets each (a few tenths of a
    point of noise: every BR reaches a verdict where there are 3)."""
    records = []
    for counted, from_ratio in crossings.items():
        for ratio in (10, 15, 20, 27, 40, 51, 70):
            config = {**(setting or {}), "budget": {"ratio": ratio, "count_augmenter": counted}}
            new = 0.6 if ratio >= from_ratio else 0.4
            noise = [(0, 0.002), (0.004, -0.003), (-0.002, 0.001)]
            for seed, (a, b) in zip(range(seeds), noise, strict=False):
                records += [fake_record("answer_augmentation", 0.5 + a, seed=seed, ratio=ratio, task="gsm8k",
                                        config=config, also=[f"budget.count_augmenter={counted}"]),
                            fake_record("new_question", new + b, seed=seed, ratio=ratio, task="gsm8k",
                                        config=config, also=[f"budget.count_augmenter={counted}"])]
    return records


def test_the_crossover_is_the_interval_where_the_leader_changes_for_each_reading_of_the_budget(tmp_path):
    papers = report.build(budget_records({True: 40, False: 20}), tmp_path)["papers"].set_index("quantity")
    def crossover_row(reading):
        return papers.loc[papers.index.str.startswith(f"seed set 100, augmenter queries {reading}")].iloc[0]
    counted, not_counted = crossover_row("counted in Q"), crossover_row("not counted")
    assert (counted["paper"], counted["reproduced"]) == ("27–51", "27–40")
    assert not_counted["reproduced"] == "15–20"  # not pooled with the other reading
    assert counted["Δ"].startswith("not comparable: ")  # tiny student, simulated teacher
    # New Question ahead from the first grid point, or never: the interval is open on that side
    pair = report.paper.paper_values()["chan2024_budget"]["crossover_of"]
    assert report.paper.interval_text(report.paper.crossover(
        report.frame(budget_records({True: 1})), *pair)) == "≤ 10"
    assert report.paper.interval_text(report.paper.crossover(
        report.frame(budget_records({True: 100})), *pair)) == "> 70"
    # one cell a BR: no verdict anywhere, so no crossover from the means alone
    assert report.paper.interval_text(report.paper.crossover(
        report.frame(budget_records({True: 40}, seeds=1)), *pair)
    ) == "can't tell where (no BR reaches a verdict)"
    # with the paper's setting, the Δ: 0 where the intervals overlap, else the gap
    setting = {"student": {"name": "7b_chat", "pretrained": "meta-llama/Llama-2-7b-chat-hf"},
               "teacher": {"name": "vllm", "backend": {"model": "meta-llama/Llama-3.1-70B-Instruct"}},
               "train": {"learning_rate": 4e-5, "effective_batch_size": 128, "epochs": 3},
               "eval": {"decoding": "greedy"}}
    papers = report.build(budget_records({True: 40, False: 15}, setting), tmp_path / "paper")["papers"]
    deltas = dict(zip(papers.quantity.str.split(":").str[0], papers["Δ"], strict=True))
    assert deltas["seed set 100, augmenter queries counted in Q"] == "+0 (overlaps)"
    assert deltas["seed set 100, augmenter queries not counted in Q"] == "-12"  # 10-15 lies below 27


def test_the_best_strategy_is_named_only_beyond_noise(tmp_path):
    """Three replicates a side: at BR 1 the two strategies swap places from seed to seed, at BR 30 new
    question leads on every seed set by 10 points or more."""
    accuracies = {(1, "answer_augmentation"): (0.70, 0.62, 0.66), (1, "new_question"): (0.68, 0.66, 0.63),
                  (30, "answer_augmentation"): (0.50, 0.55, 0.52), (30, "new_question"): (0.80, 0.72, 0.70)}
    records = [fake_record(strategy, accuracy, seed=seed, ratio=ratio)
               for (ratio, strategy), values in accuracies.items() for seed, accuracy in enumerate(values)]
    budget = report.build(records, tmp_path)["budget_strategies"]
    low, high = budget["best (paired t-test, 5%)"]
    assert low.startswith("none (can't tell (effects under") and high == "new_question"


def control_records(oracle_gain: float, strategy_gain: float, shuffled_gain: float, n: int = 3) -> list:
    """Fine-tuning, and LLM2LLM with the oracle, a real teacher and shuffled labels, over n replicates
    whose shared noise (the replicate's draw) both sides of a comparison see."""
    rng = np.random.default_rng(5)
    records = []
    for replicate in range(n):
        base = 0.55 + rng.normal(0, 0.03)
        for teacher, gain in (("oracle", oracle_gain), ("gpt", strategy_gain),
                              ("shuffled_labels", shuffled_gain)):
            role = {"oracle": "positive_control", "shuffled_labels": "negative_control"}.get(teacher,
                                                                                              "teacher")
            config = {"teacher": {"name": teacher, "role": role}, "replicate": replicate}
            records.append(fake_record("finetune", base, config=config, also=[f"replicate={replicate}"]))
            records.append(fake_record("llm2llm", base + gain + rng.normal(0, 0.005), config=config,
                                       also=[f"replicate={replicate}", f"teacher={teacher}"]))
    return records


def test_every_comparison_has_a_verdict_and_the_controls_a_gap_recovered(tmp_path):
    made = report.build(control_records(0.10, 0.05, -0.08), tmp_path)
    table = made["comparisons"].set_index("A")
    assert table.loc["llm2llm (oracle)", "verdict"] == "helps"
    assert table.loc["llm2llm (shuffled_labels)", "verdict"] == "hurts"
    assert set(table.B) == {"finetune"} and (table.n == 3).all()  # paired by replicate, fine-tuning once
    pgr = table.loc["llm2llm (gpt)", "PGR"]  # paired by replicate, Fieller's interval
    point, interval = pgr.split(" ", 1)
    assert float(point) == pytest.approx(0.5, abs=0.1) and interval.startswith("[")
    noise = made["noise"]
    assert set(noise.variant) == {"finetune", "llm2llm"} and (noise.cells == 3).all()
    for sd, interval in zip(noise["sd across training replicates"], noise["its 95% interval"]):
        low, high = map(float, interval.strip("[]").split(", "))
        assert low < float(sd) < high and high / low > 5  # 2 degrees of freedom: an sd known only roughly
    text = (tmp_path / "report.md").read_text()
    assert "**3 of 3 comparisons reach a verdict**" in text and "## Every comparison" in text
    # one Benjamini-Hochberg family over every test the report prints (here the comparisons, and the
    # papers table's LLM2LLM rows, one per teacher), from the unrounded p
    tested = [(t[c], t.p if c == "q" and "p" in t else None) for name, t in made.items()
              if isinstance(t, pd.DataFrame) for c in t.columns if c == "q" or str(c).endswith(" q")]
    q = pd.concat([pd.to_numeric(q, errors="coerce") for q, _ in tested]).dropna()
    assert not any(str(c).startswith("p_raw") for t in made.values() if isinstance(t, pd.DataFrame)
                   for c in t.columns)
    # the comparisons, the papers table's LLM2LLM rows (one per teacher) and the LLM2LLM table's gains
    assert len(q) == 3 + 3 + 3 and {"llm2llm gain q"} <= set(made["llm2llm"].columns)
    for q_column, p_column in tested:  # q >= p wherever the p is printed
        if p_column is not None:
            both = pd.DataFrame({"q": pd.to_numeric(q_column, errors="coerce"),
                                 "p": pd.to_numeric(p_column, errors="coerce")}).dropna()
            assert (both.q >= both.p - 1e-3).all()
    assert f"over every test the report prints ({len(q)}, one Benjamini-Hochberg family), " \
        f"{int((q < 0.05).sum())} verdict" in text


def recipe_records(setting: list, mean: float, sd: float, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [fake_record("finetune", mean + shared + rng.normal(0, sd), config={"replicate": r},
                        also=[f"replicate={r}", "eval.limit=null", *setting])
            for r, shared in enumerate([0.0, -0.04, 0.03, 0.01, -0.02])]


def test_recipes_are_judged_against_the_plainest_with_their_noise(tmp_path):
    """Three recipes of fine-tuning in two sweeps, reported together: the plain one, one that scores
    higher (6 epochs, +10 points) and one as good but quieter; each against the plainest, paired."""
    sweeps = {"plain": recipe_records([], 0.55, 0.01, 1),
              "longer": recipe_records(["train.epochs=6"], 0.65, 0.01, 2),
              "averaged": recipe_records(["train.average_weights=0.5"], 0.55, 0.01, 3)}
    for name, records in sweeps.items():
        for i, record in enumerate(records):
            (tmp_path / name / str(i)).mkdir(parents=True)
            (tmp_path / name / str(i) / "record.json").write_text(json.dumps(record))
    out = tmp_path / "together"
    assert report_main([*(str(tmp_path / n) for n in sweeps), "--out", str(out)]) == 0
    with open(out / "recipes.csv") as table:
        recipes = {row["A"]: row for row in csv.DictReader(table)
                   if row["metric"] == "generation accuracy (the papers')"}
    assert set(recipes) == {"eval.limit=null train.epochs=6", "eval.limit=null train.average_weights=0.5"}
    longer = recipes["eval.limit=null train.epochs=6"]
    averaged = recipes["eval.limit=null train.average_weights=0.5"]
    assert {longer["B"], averaged["B"]} == {"eval.limit=null"} and longer["n"] == averaged["n"] == "5"
    assert longer["verdict"] == "helps" and averaged["verdict"].startswith("can't tell")
    sd, interval = averaged["sd A"].split(" ", 1)
    low, high = map(float, interval.strip("[]").split(", "))
    assert low < float(sd) < high
    assert "## Recipes" in (out / "report.md").read_text()


def test_a_grid_that_cannot_detect_its_positive_control_says_so_at_the_top(tmp_path):
    build = report.build(control_records(0.002, 0.0, 0.0, n=2), tmp_path)
    assert build["comparisons"].set_index("A").loc["llm2llm (oracle)", "verdict"].startswith("can't tell")
    top = (tmp_path / "report.md").read_text().split("\n\n")[2]  # under the title and the cell counts
    assert "This grid cannot detect even its positive control" in top and "below" in top


def advised_records(strategy: str, accuracy: float, ratio: int, seeds: int = 1, **more) -> list[dict]:
    noise = [0.0, 0.004, -0.003]
    return [fake_record(strategy, accuracy + noise[seed] * (1 if strategy == "new_question" else -0.5),
                        seed=seed, ratio=ratio, **more) for seed in range(seeds)]


def test_advisor_recommends_only_a_verdict_within_one_student_and_teacher(tmp_path, capsys):
    store = tmp_path / "results" / "records"
    records = [*advised_records("answer_augmentation", 0.7, 1), *advised_records("new_question", 0.6, 1),
               *advised_records("answer_augmentation", 0.7, 30, seeds=3),
               *advised_records("new_question", 0.8, 30, seeds=3),
               *advised_records("new_question", 0.9, 1, size=1000)]
    for record in records:
        (store / record["cell_id"]).mkdir(parents=True)
        (store / f"{record['cell_id']}.json").write_text(json.dumps(record))
    low = advise.advise("trec", 120, 2.0, [tmp_path / "results"])  # one cell a strategy: no verdict
    assert "recommendation: none — no strategy beats the others here" in low and "|S| = 100 and BR = 1" in low
    assert "answer_augmentation vs new_question: can't tell (1 replicate)" in low
    high = advise.advise("trec", 90, 20.0, [tmp_path / "results"])
    assert "recommendation: new_question (it beats every other strategy at p < 0.05 here)" in high
    assert "|S| = 100 and BR = 30" in high and "answer_augmentation vs new_question: hurts" in high
    # another student where answer augmentation wins: the settings disagree, nothing is pooled
    other = {"student": {"name": "smollm2_135m"}}
    for record in [*advised_records("answer_augmentation", 0.9, 30, seeds=3, config=other),
                   *advised_records("new_question", 0.8, 30, seeds=3, config=other)]:
        (store / f"{record['cell_id']}.json").write_text(json.dumps(record))
    split = advise.advise("trec", 90, 20.0, [tmp_path / "results"])
    assert "recommendation: none" in split and "student smollm2_135m" in split and "student tiny" in split
    unmeasured = advise.advise("gsm8k", 100, 60.0, [tmp_path / "results"])
    assert "recommendation: new_question" in unmeasured and "published rule" in unmeasured
    assert "recommendation: answer_augmentation" in advise.advise("gsm8k", 1000, 5.0, [tmp_path / "none"])
    assert advise.main(["task=trec"]) == 2 and "usage" in capsys.readouterr().err


def test_the_grid_size_is_counted_for_progress():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=budget_strategies"], return_hydra_config=True)
    cfg.hydra.overrides.task = ["experiment=budget_strategies", "budget.ratio=1,2"]
    assert count_cells(cfg) == 3 * 3 * 2 * 2  # the command line's BR grid replaces the preset's


@pytest.mark.slow
def test_continued_training_resumes_from_stored_weights(tmp_path):
    """llm2llm_continued keeps each non-final stage's weights; a longer run reuses stage 0 from the store
    and trains stage 1 again from stage 0's stored weights (in run 1, stage 1 was final: it scored no
    seed examples, so it is another stage)."""
    args = [*QUICK, "strategy=llm2llm_continued", "train.epochs=0.5"]
    first = run_cli(*args, "strategy.iterations=2", f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    longer = run_cli(*args, "strategy.iterations=3", f"hydra.run.dir={tmp_path / 'longer'}", cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "record.json").read_text()) for d in ("first", "longer"))
    assert [i["reused"] for i in two["iterations"]] == [True, False, False]
    assert two["stages"]["keys"][0] == one["stages"]["keys"][0]
    # stage 1 retrained from stage 0's stored weights gives what run 1 got from them in memory
    assert two["iterations"][1]["test_acc"] == one["iterations"][1]["test_acc"]
    stages = tmp_path / "stores" / "stages"
    assert (stages / two["stages"]["keys"][1] / "model.safetensors").is_file()


def test_a_low_noise_metric_reaches_the_verdict_generation_accuracy_cannot(tmp_path):
    """The same +3 points of accuracy and +0.2 nats of label log-probability over 3 replicates: accuracy's
    replicate noise (sd 0.05) hides it, the log-likelihood's (sd 0.01) does not."""
    rng = np.random.default_rng(2)
    records = []
    for replicate in range(3):
        config = {"replicate": replicate}
        for strategy, gain in (("finetune", 0.0), ("llm2llm", 1.0)):
            accuracy = 0.55 + 0.03 * gain + rng.normal(0, 0.05)
            record = fake_record(strategy, accuracy, config=config, also=[f"replicate={replicate}"])
            record["iterations"] = [{"test_acc": accuracy, "likelihood_metric": "label_logprob",
                                     "test_likelihood": -1.5 + 0.2 * gain + rng.normal(0, 0.01),
                                     "test_choice_acc": accuracy + rng.normal(0, 0.01)}]
            records.append(record)
    made = report.build(records, tmp_path)
    verdicts = made["metrics"].set_index("metric")
    assert verdicts.loc["label_logprob", "verdict"] == "helps"
    assert verdicts.loc["generation accuracy (the papers')", "verdict"].startswith("can't tell")
    assert float(verdicts.loc["label_logprob", "Δ"]) == pytest.approx(0.2, abs=0.03)  # in nats, not points
    assert float(verdicts.loc["label_logprob", "SNR"]) > float(
        verdicts.loc["generation accuracy (the papers')", "SNR"])
    noise = made["metrics_noise"]
    assert set(noise.metric) == {"generation accuracy (the papers')", "likeliest-label accuracy",
                                 "label_logprob"}
    assert "## Low-noise metrics" in (tmp_path / "report.md").read_text()
    # cells without the likelihood scoring: no such section
    plain = report.build(control_records(0.1, 0.05, -0.08), tmp_path / "plain")
    assert "metrics" not in plain and "Low-noise" not in (tmp_path / "plain" / "report.md").read_text()


def test_the_diversity_papers_tables_stand_beside_a_pretraining_sweep(tmp_path):
    """Table 7's averages, with a Δ where student, template and zero-shot tasks match the paper's, and
    'not comparable' with the difference where they do not; Table 10's rows beside the cluster scores."""
    tasks = ["arc_challenge", "arc_easy", "boolq", "social_iqa", "winogrande", "piqa", "copa", "hellaswag"]
    records = []
    for student, personas, accuracy in (("350m_scratch", 3, 0.50), ("tiny", 0, 0.40)):
        config = {"student": {"name": student}, "strategy": {"styles": ["news article"], "personas": personas,
                                                              "real_share": 0.0, "zero_shot_tasks": tasks}}
        record = fake_record("finetune", 0.5, config=config, also=[f"student={student}"])
        record.update(strategy="synthetic_pretraining", family="pretraining",
                      choices={"strategy": "synthetic_pretraining"})
        record["iterations"] = [{"test_acc": 0.5, "zero_shot": {t: {"acc": accuracy} for t in tasks}},
                                {"test_acc": 0.5, "zero_shot": {t: {"acc": accuracy + 0.02} for t in tasks}}]
        records.append(record)
    papers = report.build(records, tmp_path)["papers"].set_index("quantity")
    table7 = papers[papers.study == "diversity (Table 7)"]
    assert len(table7) == 28  # 2 students x pre-trained / SFT x 7 data
    matched = table7.loc[table7.index.str.startswith("350M pre-trained, Topic Styles Persona:")].iloc[0]
    assert matched.paper == "51.92" and matched.reproduced == "50.00 (1 cells)" and matched["Δ"] == "-1.92"
    other = table7.loc[table7.index.str.startswith("350M after SFT, Topic Styles:")].iloc[0]
    assert other.reproduced == "42.00 (1 cells)" and other["Δ"] == "not comparable: student_model tiny " \
        "(paper 350m_scratch)"
    table10 = papers[papers.study == "diversity (Table 10)"]
    assert len(table10) == 15 and set(table10["paper"]) >= {"5.12 ± 0.14", "3.99 ± 0.05"}


def test_llm2llm_is_judged_round_by_round_against_its_own_iteration_0(tmp_path):
    """Iteration 1 gains (0.2 nats, accuracy +3 points under sd 0.05 noise); iteration 2 loses it again:
    the round-by-round table finds the gain by log-likelihood, where the final iteration shows none."""
    rng = np.random.default_rng(4)
    records = []
    for replicate in range(3):
        start = 0.55 + rng.normal(0, 0.03)
        accuracies = [start, start + 0.03 + rng.normal(0, 0.05), start + rng.normal(0, 0.05)]
        base = -1.2 + rng.normal(0, 0.05)  # the replicate's own level, shared by its rounds
        likelihoods = [base, base + 0.2 + rng.normal(0, 0.01), base + rng.normal(0, 0.05)]
        record = fake_record("llm2llm", accuracies[-1], config={"replicate": replicate},
                             also=[f"replicate={replicate}"])
        record["iterations"] = [{"test_acc": a, "test_likelihood": ll, "likelihood_metric": "label_logprob"}
                                for a, ll in zip(accuracies, likelihoods, strict=True)]
        records.append(record)
    table = report.build(records, tmp_path)["iterations"].set_index(["iteration", "metric"])
    assert table.loc[(1, "label_logprob"), "verdict"] == "helps"
    assert table.loc[(1, "label_logprob"), "Δ vs iteration 0"].endswith(" nats")
    assert table.loc[(1, "accuracy"), "verdict"].startswith("can't tell")
    assert table.loc[(2, "label_logprob"), "verdict"].startswith("can't tell") and (table.n == 3).all()
