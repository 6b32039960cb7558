"""End to end through `python run.py`, as a user runs it."""

import json

import pytest
import wandb

from bench import job
from bench.config import build_strategy, validated
from bench.tasks import load_task
from runners import pipeline
from tests.conftest import QUICK, compose_config, run_cli


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


@pytest.mark.slow
def test_the_default_job_learns(tmp_path):
    """The embedded default (LLM2LLM, 3 iterations, simulated teacher), scored on all 500 TREC test
    questions each iteration: well above the 27.6% majority rate, and it says so per iteration."""
    result = run_cli("logger=none", run_dir_of(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/examples"] == 500
    assert metrics["final/test_acc"] > metrics["test/majority_rate"] + 0.15
    rounds = json.loads((tmp_path / "run" / "iterations.json").read_text())
    # three iterations, or fewer when the student got every seed example right: nothing left to add
    assert [r["iteration"] for r in rounds] == [0, 1, 2] or rounds[-1]["scored_acc"] == 1.0
    assert rounds[1]["train_examples"] == 500 + rounds[1]["generation"]["added"]
    assert "iteration  train examples  added  test accuracy" in result.stdout


def test_wandb_run_is_finished_when_the_job_fails(tmp_path, monkeypatch):
    def broken_evaluation(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(job, "evaluate", broken_evaluation)
    cfg = compose_config(*QUICK, "logger=wandb", "train.epochs=0.1")
    with pytest.raises(RuntimeError, match="evaluation broke"):
        config = validated(cfg)
        pipeline.run(cfg, config, build_strategy(cfg), load_task(config.task, config.data_dir), tmp_path)
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


def test_wandb_is_offline_unless_a_project_and_key_are_given(monkeypatch):
    from bench.config import LoggerConfig
    from bench.tracking import wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(LoggerConfig()) == "offline"
    assert wandb_mode(LoggerConfig(project="mine")) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(LoggerConfig()) == "offline"
    assert wandb_mode(LoggerConfig(project="mine")) == "online"
    assert wandb_mode(LoggerConfig(project="mine", mode="offline")) == "offline"
