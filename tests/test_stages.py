"""The stage store on the real Job, fast: training and scoring are replaced by counting stand-ins, so
what is reused and what is recomputed is checked in milliseconds; and LLM2LLM's retraining from the
base weights is checked on the real job with real training, by hashing the weights each stage starts
from."""

import hashlib
from pathlib import Path

import pytest
import torch

from bench import stages as stages_module
from bench.config import LoggerConfig
from bench.evaluation import EvalResult
from bench.job import Job
from bench.seed_set import sample_seed_set
from bench.tasks import load_task
from bench.tracking import Tracker
from bench.training import TrainStats
from tests.conftest import QUICK, typed_config


def make_job(tmp_path: Path, data_dir, *overrides: str, run: str = "run") -> Job:
    config = typed_config(*QUICK, f"store_dir={tmp_path / 'store'}", f"cache_path={tmp_path / 'c.sqlite'}",
                          *overrides)
    data = load_task(config.task, str(data_dir))
    seed = sample_seed_set(data.train, config.seed_set, config.task.name)
    tracker = Tracker(tmp_path / run, LoggerConfig(backend="none"), {}, name="test")
    return Job(config, tmp_path / run, data, seed, tracker)


@pytest.fixture
def counted(monkeypatch):
    """Training and scoring replaced by stand-ins that count their calls."""
    calls = {"train": 0, "score": 0}

    def finetune(model, tokenizer, examples, recipe, output_dir, report_to, sharding="none"):
        calls["train"] += 1
        return model, TrainStats(len(examples), 1, 0.1, 1.0, 10, 0)

    def evaluate(model, tokenizer, task, split, examples, cfg, work_dir, ranks=None, decoding=None):
        calls["score"] += 1
        records = [{"id": e.id, "label": e.label, "generation": "", "prediction": "", "valid": True,
                    "correct": i % 2 == 0}
                   for i, e in enumerate(examples)]
        return EvalResult(split, 0.5, 0.1, records)

    monkeypatch.setattr(stages_module, "finetune", finetune)
    monkeypatch.setattr(stages_module, "evaluate", evaluate)
    return calls


def test_the_same_stage_is_reused_and_a_changed_one_recomputed(tmp_path, data_dir, counted):
    job = make_job(tmp_path, data_dir)
    seed = job.seed_set
    first = job.train_and_score(seed, 0, score_on=seed)
    assert counted == {"train": 1, "score": 2} and not first.reused

    again = make_job(tmp_path, data_dir, run="again").train_and_score(seed, 0, score_on=seed)
    assert again.reused and again.key == first.key and counted["train"] == 1  # same inputs: reused

    other = make_job(tmp_path, data_dir, run="other")
    changed_examples = other.train_and_score(seed[:-1], 0, score_on=seed)
    changed_scored = other.train_and_score(seed, 0, score_on=seed[:-1])
    kept = other.train_and_score(seed, 1, keep_weights=True)
    from_stage = other.train_and_score(seed, 2, start_from=kept)
    keys = {first.key, changed_examples.key, changed_scored.key, kept.key, from_stage.key}
    assert len(keys) == 5 and counted["train"] == 5  # each change of examples, scored set or start


def test_a_stage_trained_with_other_cpu_threads_is_another_stage(tmp_path, data_dir, counted):
    # the weight gradients' sums split over the threads: 1 and 2 threads train different students
    seed, threads = make_job(tmp_path, data_dir).seed_set, torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = make_job(tmp_path, data_dir).train_and_score(seed, 0)
        torch.set_num_threads(2)
        two = make_job(tmp_path, data_dir, run="two").train_and_score(seed, 0)
    finally:
        torch.set_num_threads(threads)
    assert not two.reused and two.key != one.key and counted["train"] == 2


def test_weight_averaging_is_another_stage_and_its_default_keeps_the_stored_stages(tmp_path, data_dir,
                                                                                   counted):
    seed = make_job(tmp_path, data_dir).seed_set
    plain = make_job(tmp_path, data_dir).train_and_score(seed, 0)
    averaged = make_job(tmp_path, data_dir, "train.average_weights=0.5", run="avg").train_and_score(seed, 0)
    assert not averaged.reused and averaged.key != plain.key and counted["train"] == 2
    # stages stored before the setting existed have the key of its default: the field is left out at 0
    job = make_job(tmp_path, data_dir, run="again")
    recipe = job.config.train
    assert {"average_weights": recipe.average_weights} == stages_module.NEUTRAL_ADDITIONS
    assert job.train_and_score(seed, 0).reused


def test_resume_false_trains_a_stored_stage_again(tmp_path, data_dir, counted):
    seed = make_job(tmp_path, data_dir).seed_set
    make_job(tmp_path, data_dir).train_and_score(seed, 0)
    again = make_job(tmp_path, data_dir, "resume=false", run="again").train_and_score(seed, 0)
    assert not again.reused and counted["train"] == 2


def test_changed_data_and_changed_code_are_never_mistaken_for_the_stored_stage(tmp_path, data_dir, counted,
                                                                              monkeypatch):
    job = make_job(tmp_path, data_dir)
    first = job.train_and_score(job.seed_set, 0)

    shorter = make_job(tmp_path, data_dir, run="shorter")
    shorter.task.test = shorter.task.test[:-1]  # the same seed set, another test split (the data digest
    # is computed on first use: here, after the change)
    assert shorter.train_and_score(shorter.seed_set, 0).key != first.key and counted["train"] == 2

    other_code = {**stages_module.code_version(), "code_digest": "0" * 16}
    monkeypatch.setattr(stages_module, "code_version", lambda: other_code)
    monkeypatch.setattr("bench.store.code_version", lambda: other_code)
    reused = make_job(tmp_path, data_dir, run="lenient").train_and_score(job.seed_set, 0)
    assert reused.reused and counted["train"] == 2  # resume=true: reused, with a warning
    strict = make_job(tmp_path, data_dir, "resume=strict", run="strict").train_and_score(job.seed_set, 0)
    assert not strict.reused and counted["train"] == 3


def test_a_stage_that_trained_zero_steps_is_an_error_and_not_stored(tmp_path, data_dir, monkeypatch):
    no_steps = TrainStats(48, 0, 0.0, 0.0, 0, 0)
    monkeypatch.setattr(stages_module, "finetune", lambda model, *args: (model, no_steps))
    job = make_job(tmp_path, data_dir)
    with pytest.raises(stages_module.BenchError, match="ran 0 optimizer steps"):
        job.train_and_score(job.seed_set, 0)
    assert not list((tmp_path / "store" / "stages").glob("*/result.json"))


def weights_hash(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().to(torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize("strategy, from_base", [("llm2llm_quick", True), ("llm2llm_continued", False)])
def test_llm2llm_retrains_from_the_base_weights_on_the_real_job(tmp_path, data_dir, monkeypatch, strategy,
                                                               from_base):
    """Real training, real scoring, the simulated teacher; each stage's starting weights are hashed."""
    from bench.strategies import build_strategy
    from tests.conftest import compose_config

    starts, ends, real_finetune = [], [], stages_module.finetune

    def hashing_finetune(model, *args, **kwargs):
        starts.append(weights_hash(model))
        model, stats = real_finetune(model, *args, **kwargs)
        ends.append(weights_hash(model))
        return model, stats

    monkeypatch.setattr(stages_module, "finetune", hashing_finetune)
    overrides = (f"strategy={strategy}", "strategy.iterations=3", "train.epochs=0.5", "eval.limit=8")
    job = make_job(tmp_path, data_dir, *overrides)
    build_strategy(compose_config(*QUICK, *overrides).strategy).run(job)
    base = weights_hash(job.student.base_model())
    assert len(starts) == 3
    if from_base:
        assert starts == [base] * 3
    else:
        assert starts == [base, ends[0], ends[1]]


def test_the_resume_policy_for_an_entry_other_code_computed(monkeypatch, caplog):
    """One rule for cells and stages: same code, reused; other code, reused only under resume=true, with a
    warning naming what changed."""
    from bench import store

    same = store.code_version()
    assert all(store.reusable("cell x", same, resume) for resume in ("true", "strict", "false"))
    other = {**same, "code_digest": "f" * 16, "packages": {**same["packages"], "torch": "0.1"}}
    assert store.reusable("cell x", other, "true")
    assert not store.reusable("cell x", other, "strict") and not store.reusable("cell x", other, "false")
    assert "cell x was computed by other code (the suite's code ffffffffffffffff" in caplog.text
    assert "torch 0.1 -> " in caplog.text


def test_a_stored_stage_keeps_its_likelihood_scores(tmp_path, data_dir, counted, monkeypatch):
    """eval.likelihood's scores travel with the stage: a reused stage reports what the trained one did."""
    from bench.evaluation import LikelihoodResult

    def likelihood(model, tokenizer, task, examples, cfg, work_dir, ranks=None):
        counted["score"] += 1
        return LikelihoodResult("label_logprob", -1.25, 0.5, [-1.0, -1.5])

    monkeypatch.setattr(stages_module, "likelihood", likelihood)
    seed = make_job(tmp_path, data_dir).seed_set
    first = make_job(tmp_path, data_dir, "eval.likelihood=true").train_and_score(seed, 0)
    again = make_job(tmp_path, data_dir, "eval.likelihood=true", run="again").train_and_score(seed, 0)
    assert again.reused and again.likelihood == first.likelihood == LikelihoodResult(
        "label_logprob", -1.25, 0.5, [-1.0, -1.5])
    plain = make_job(tmp_path, data_dir, run="plain").train_and_score(seed, 0)
    assert plain.key != first.key and plain.likelihood is None  # the scoring is part of the stage's key
