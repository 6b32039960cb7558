"""End to end through `python run.py`, as a user runs it."""

import json
import os
import shlex
import subprocess
import sys

import pytest
import wandb

from bench import stages
from bench.records import CellRecord
from runners import pipeline
from runners.inputs import prepare
from tests.conftest import QUICK, compose_config, run_cli
from tests.wandb_file import read_run


def run_dir_of(tmp_path):
    return f"hydra.run.dir={tmp_path / 'run'}"


@pytest.mark.slow
def test_a_job_writes_its_run_record_and_an_offline_wandb_run(tmp_path):
    result = run_cli(*QUICK, "strategy=finetune", "logger=wandb", run_dir_of(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/examples"] == 24  # its accuracy is checked against the predictions below
    assert metrics["test/majority_rate"] == pytest.approx(0.276)
    assert len(json.loads((run / "seed_ids.json").read_text())) == 48
    predictions_file = run / "predictions" / "iteration_0" / "test.jsonl"
    predictions = [json.loads(line) for line in predictions_file.read_text().splitlines()]
    assert len(predictions) == 24 and {"id", "label", "generation", "prediction", "correct"} <= set(
        predictions[0]
    )
    assert sum(p["correct"] for p in predictions) / 24 == pytest.approx(metrics["final/test_acc"])
    assert "seed_set:\n  size: 48" in (run / "config.yaml").read_text()
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert "test accuracy" in result.stdout and str(run) in result.stdout
    # 48 examples, 1 epoch, batch 16: 3 optimizer steps, said on the console with the fix and in the summary
    assert "warning: training took only 3 optimizer step(s) (48 examples" in result.stdout
    assert "raise train.epochs or lower train.effective_batch_size" in result.stdout
    assert "! iteration 0: 3 optimizer step(s)" in (run / "summary.txt").read_text()
    stage = json.loads((run / "iterations.json").read_text())[0]
    assert stage["train_steps"] == 3
    assert stage["test_invalid_share"] == sum(not p["valid"] for p in predictions) / 24
    # the same job again: skipped, and its stored summary shown, not just one line
    again = run_cli(*QUICK, "strategy=finetune", "logger=wandb", f"hydra.run.dir={tmp_path / 'again'}",
                    cwd=tmp_path)
    assert "is already done" in again.stdout and (run / "summary.txt").read_text().strip() in again.stdout


@pytest.mark.slow
def test_the_default_job_as_a_user_sees_it(tmp_path):
    """`python run.py` with nothing set (LLM2LLM, 3 iterations, simulated teacher, W&B offline), scored
    on all 500 TREC test questions each iteration: it learns; the console tells the story in one line
    per stage and a summary; run.log has everything; the W&B run is laid out the W&B way."""
    # the user's torch threads (one per core), not the test workers' one: the tiny student's results
    # depend on the thread count (with one thread it gets every seed example right at iteration 0)
    result = run_cli(run_dir_of(tmp_path), cwd=tmp_path, OMP_NUM_THREADS=str(os.cpu_count()),
                     OMP_WAIT_POLICY="PASSIVE")  # its idle threads sleep, not spin, beside the other worker
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/examples"] == 500
    assert metrics["final/test_acc"] > metrics["test/majority_rate"] + 0.15
    rounds = json.loads((run / "iterations.json").read_text())
    # three iterations, or fewer when the student got every seed example right: nothing left to add
    assert [r["iteration"] for r in rounds] == [0, 1, 2] or rounds[-1]["scored_acc"] == 1.0
    assert rounds[1]["train_examples"] == 500 + rounds[1]["generation"]["added"]

    # the console: no progress-bar frames, loss dicts or W&B banners; a labelled line per stage
    console = result.stdout
    assert "\r" not in console and "{'loss'" not in console and "wandb:" not in console + result.stderr
    assert "[INFO]" not in console  # transformers prints "[INFO] Running in WANDB offline mode" on import
    assert "[iteration 0/2] training on 500 examples" in console
    assert "[iteration 1/2] teacher: " in console and "[iteration 0/2] scoring test (500 examples)" in console
    assert len(console) < 4000 and result.stderr == ""
    summary = (run / "summary.txt").read_text()
    assert "iteration  train examples  added  steps  test accuracy  no answer" in summary
    assert summary.strip() in console and "warning:" not in console  # 256 steps, every answer a label
    assert f"wandb sync {run / 'wandb'}" in summary and "teacher=openai" in summary
    # run.log: the stage lines, the loss points and the libraries' messages
    story = (run / "run.log").read_text()
    assert "training on 500 examples" in story and "[lm_eval." in story
    assert story.count("step 26/256: loss") == len([r for r in rounds if not r["reused"]])

    wandb_run = read_run(next((run / "wandb").glob("offline-run-*/run-*.wandb")))
    assert wandb_run["job_type"] == "llm2llm"  # a job type per strategy: replicates group by it
    assert wandb_run["config"]["choices.strategy"] == "llm2llm_quick" and "cell_id" in wandb_run["config"]
    assert "per_device_train_batch_size" not in wandb_run["config"]  # no Trainer arguments
    # per-iteration metrics on the `iteration` axis; each training run's curve on its own step axis
    assert wandb_run["metrics"]["test/*"] == "iteration"
    assert wandb_run["metrics"]["train_curve/iteration_1/*"] == "train_curve/iteration_1/step"
    accuracy = [(h["iteration"], h["test/acc"]) for h in wandb_run["history"] if "test/acc" in h]
    assert accuracy == [(r["iteration"], r["test_acc"]) for r in rounds]
    curve = [h["train_curve/iteration_1/step"] for h in wandb_run["history"]
             if "train_curve/iteration_1/loss" in h]
    assert curve == sorted(curve) and curve[0] == 26  # its own steps, not appended to iteration 0's
    logged = {key for row in wandb_run["history"] for key in row}
    assert not logged & {"train/loss", "train/global_step", "final/test_acc", "data/seed_set",
                         "student/parameters", "teacher/teacher/requests"}
    # finals and constants are the summary
    assert wandb_run["summary"]["final/test_acc"] == metrics["final/test_acc"]
    assert wandb_run["summary"]["data/seed_set"] == 500
    # the generated data as a dataset Artifact of this run
    datasets = [a for a in wandb_run["artifacts"] if a["type"] == "dataset"]
    assert len(datasets) == 1 and datasets[0]["name"].startswith("generated-")
    assert {"generated/iteration_1.jsonl", "generations.jsonl"} <= set(datasets[0]["files"])


def test_wandb_run_is_finished_when_the_job_fails(tmp_path, monkeypatch):
    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(stages, "evaluate", broken_evaluation)
    cfg = compose_config(*QUICK, "logger=wandb", "train.epochs=0.1")
    with pytest.raises(RuntimeError, match="evaluation broke"):
        pipeline.run(prepare(cfg), tmp_path, CellRecord(None, str(tmp_path), [], {}))
    assert wandb.run is None  # finished, with a failing exit code
    assert (tmp_path / "seed_ids.json").is_file()  # what was done before the failure is kept


@pytest.mark.slow
def test_a_new_classification_task_is_one_yaml_file(tmp_path, user_conf):
    """A user's CSV task: one file in a task/ config folder, no Python."""
    rows = ["text,topic"] + [f"the match ended {i} to {i + 1},sport" for i in range(30)] + \
        [f"parliament passed bill number {i},politics" for i in range(30)]
    (tmp_path / "train.csv").write_text("\n".join(rows[:21] + rows[31:51]) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(rows[:1] + rows[21:31] + rows[51:61]) + "\n")
    searchpath = user_conf("task/pytest_news.yaml", f"""\
        name: pytest_news
        cue: "Topic:"
        target_column: topic
        labels: [sport, politics]
        local:
          format: csv
          train: {tmp_path / 'train.csv'}
          test: {tmp_path / 'test.csv'}
    """)
    result = run_cli("task=pytest_news", searchpath, "seed_set.size=32", "train.epochs=4", "logger=none",
                     "student.architecture.num_hidden_layers=1", "student.tokenizer_vocab_size=400",
                     run_dir_of(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/examples"] == 20 and metrics["data/train_pool"] == 40
    last = max((tmp_path / "run" / "predictions").glob("iteration_*/test.jsonl"))
    predictions = [json.loads(line) for line in last.read_text().splitlines()]
    # the new task's labels are predicted and scored: a trivially separable task is learned
    assert {p["prediction"] for p in predictions} == {"sport", "politics"}
    assert all(p["correct"] == (p["prediction"] == p["label"]) for p in predictions)
    assert metrics["final/test_acc"] >= 0.8


def test_wandb_keeps_its_own_settings_and_decides_the_mode_from_its_credentials(monkeypatch, tmp_path):
    """Only what the user set reaches wandb.init: WANDB_PROJECT / WANDB_ENTITY / WANDB_MODE and a prior
    `wandb login` (its netrc entry) work as in any W&B script."""
    from bench.config import LoggerConfig
    from bench.tracking import init_arguments

    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no login yet
    arguments = init_arguments(LoggerConfig())
    assert (arguments["mode"], arguments["project"]) == ("offline", "synthbench")
    assert "entity" not in arguments
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert init_arguments(LoggerConfig())["mode"] == "online"  # `wandb login` was run
    assert init_arguments(LoggerConfig(mode="offline"))["mode"] == "offline"  # logger.mode wins
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_PROJECT", "theirs")
    arguments = init_arguments(LoggerConfig())
    assert "mode" not in arguments and "project" not in arguments  # wandb reads its own variables
    assert init_arguments(LoggerConfig(project="mine", entity="lab"))["project"] == "mine"
    assert init_arguments(LoggerConfig(project="mine", entity="lab"))["entity"] == "lab"


@pytest.mark.slow
def test_a_saved_run_is_scored_by_plain_lm_eval_without_the_suite(tmp_path):
    """student.save=final: the run folder's HF weights and lm-eval task folder give plain `lm_eval` the
    job's own test accuracy, with this package made unimportable."""
    result = run_cli(*QUICK, "strategy=finetune", "student.save=final", run_dir_of(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    line = next(x for x in (run / "summary.txt").read_text().splitlines() if "score it again" in x)
    command = shlex.split(line.split("score it again", 1)[1])
    assert command[:3] == ["lm_eval", "--model", "hf"]
    # the scoring file beside the task YAML needs nothing beyond the standard library
    scoring = run / "lm_eval_tasks" / "synthbench_scoring.py"
    check = ("import runpy; f = runpy.run_path(%r)['process_results']; "
             "print(f({'kind': 'classification', 'label': 'HUM', 'labels': ['HUM', 'LOC']}, ['HUM.']))")
    alone = subprocess.run([sys.executable, "-I", "-S", "-c", check % str(scoring)], capture_output=True,
                           text=True, check=False)
    assert alone.stdout.strip() == "{'acc': 1.0}", alone.stderr
    blocked = ("import sys; sys.modules['bench'] = sys.modules['runners'] = None; "
               "sys.argv = ['lm_eval', *sys.argv[1:]]; "
               "from lm_eval.__main__ import cli_evaluate; cli_evaluate()")
    arguments = [*command[1:], "--output_path", str(tmp_path / "out")]
    plain = subprocess.run([sys.executable, "-c", blocked, *arguments], cwd=tmp_path, capture_output=True,
                           text=True, check=False, timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    scores = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert scores["synthbench_trec_test"]["acc,none"] == pytest.approx(metrics["final/test_acc"])
    assert metrics["test/examples"] == 24 and (run / "model" / "model.safetensors").is_file()


def test_the_suites_bars_draw_on_a_terminal_only(monkeypatch):
    import io

    from bench.console import bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert bar(10, "training").disable  # a log file or a pipe: no frames
    monkeypatch.setattr(sys, "stderr", Terminal())
    shown = bar(10, "[iteration 1/2] training", "step")
    assert not shown.disable
    shown.update(3)
    shown.close()
    assert "[iteration 1/2] training:   0%|          | 0/10" in sys.stderr.getvalue()
    assert bar(10, "training", disable=True).disable  # e.g. a rank other than 0

