import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from bench.evaluation import evaluate, generation_kwargs, write_lm_eval_task
from bench.seed_set import sample_seed_set
from bench.students import Student
from bench.task_kinds import KINDS
from bench.tasks import load_task
from bench.training import IGNORE, encode, finetune
from tests.conftest import QUICK, typed_config


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A tiny student trained briefly on 48 TREC seed examples, shared by this module's tests."""
    cfg = typed_config(*QUICK, "train.epochs=3")
    data = load_task(cfg.task, str(data_dir))
    seed = sample_seed_set(data.train, cfg.seed_set, "trec")
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train))
    model, stats = finetune(student.base_model(), student.tokenizer, seed, cfg.train,
                            tmp_path_factory.mktemp("trainer"))
    return cfg, data, seed, student, model, stats


def test_loss_is_on_target_tokens_only(trained):
    _, _, seed, student, _, _ = trained
    tok = student.tokenizer
    feature = encode(seed[:1], tok, max_length=512)[0]
    prompt_len = len(tok(seed[0].prompt)["input_ids"])
    assert feature["labels"][:prompt_len] == [IGNORE] * prompt_len
    target = [t for t in feature["labels"] if t != IGNORE]
    assert target[-1] == tok.eos_token_id
    assert tok.decode(target, skip_special_tokens=True).strip() == seed[0].target


def test_truncation_keeps_the_target(trained):
    _, _, seed, student, _, _ = trained
    feature = encode(seed[:1], student.tokenizer, max_length=4)[0]
    assert len(feature["input_ids"]) == 4 and IGNORE not in feature["labels"][-2:]


def test_training_runs_and_counts_tokens(trained):
    _, _, seed, _, _, stats = trained
    assert stats.examples == len(seed) == 48
    assert stats.steps == 3 * 3  # 48 examples / batch 16, 3 epochs
    assert stats.real_tokens > 0 and 0 <= stats.padding_share < 0.5
    assert stats.train_loss < math.log(len(trained[3].tokenizer))  # better than a uniform guess


def test_training_from_base_changes_only_the_copy(trained):
    _, _, _, student, model, _ = trained
    base = student.base_model()
    assert not torch.equal(next(base.parameters()), next(model.parameters()))


def test_lm_eval_task_yaml_points_at_absolute_data(trained, tmp_path):
    cfg, data, _, _, _, _ = trained
    name = write_lm_eval_task(cfg.task, "test", data.test[:5], cfg.eval, tmp_path / "tasks")
    text = (tmp_path / "tasks" / f"{name}.yaml").read_text()
    assert "process_results: !function synthbench_scoring.process_results" in text
    spec = yaml.safe_load(text.replace("!function", ""))
    data_file = spec["dataset_kwargs"]["data_files"]["test"]
    assert data_file.startswith("/")
    docs = [json.loads(line) for line in Path(data_file).read_text().splitlines()]
    assert [d["id"] for d in docs] == [e.id for e in data.test[:5]]
    assert spec["generation_kwargs"] == {"until": ["\n"], "do_sample": False, "max_gen_toks": 4}


def test_evaluation_keeps_per_example_results(trained, tmp_path):
    cfg, _, seed, student, model, _ = trained
    result = evaluate(model, student.tokenizer, cfg.task, "seed", seed, cfg.eval, tmp_path, limit=24)
    assert [r["id"] for r in result.records] == [e.id for e in seed[:24]]
    labels = {e.id: e.label for e in seed}
    for record in result.records:  # lm-eval's per-example metric is the suite's scoring
        assert record["correct"] == KINDS["classification"].is_correct(
            record["generation"], labels[record["id"]], cfg.task.labels
        )
    assert result.accuracy == pytest.approx(sum(r["correct"] for r in result.records) / 24)
    assert 0 < result.stderr < 0.2 or result.accuracy in (0.0, 1.0)
    assert set(result.wrong_ids) == {r["id"] for r in result.records if not r["correct"]}


def test_greedy_and_sampled_decoding():
    gsm8k = typed_config("task=gsm8k")
    assert generation_kwargs(gsm8k.task, gsm8k.eval) == {
        "until": ["\n\n"],
        "do_sample": False,
        "max_gen_toks": 256,
    }
    sampled = typed_config("task=gsm8k", "eval=llm2llm_sampled")
    assert generation_kwargs(sampled.task, sampled.eval) == {
        "until": ["\n\n"], "do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_gen_toks": 100}


def test_lora_student_trains_and_is_scored(data_dir, tmp_path):
    cfg = typed_config(*QUICK, "student.lora.enabled=true", "student.lora.r=4", "eval.limit=4")
    data = load_task(cfg.task, str(data_dir))
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train))
    model, stats = finetune(student.base_model(), student.tokenizer, data.train[:16], cfg.train, tmp_path)
    assert stats.steps == 1
    result = evaluate(model, student.tokenizer, cfg.task, "test", data.test, cfg.eval, tmp_path, limit=4)
    assert len(result.records) == 4
    assert result.accuracy == pytest.approx(sum(r["correct"] for r in result.records) / 4)
