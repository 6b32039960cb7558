import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

from bench import interrupts
from bench.errors import BenchError
from bench.evaluation import evaluate, generation_kwargs, likelihood, save_for_scoring, write_lm_eval_task
from bench.seed_set import sample_seed_set
from bench.students import Student
from bench.task_kinds import KINDS
from bench.tasks import load_task
from bench.training import IGNORE, batch_split, encode, finetune, sharding_arguments
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


class WeightsAfterEachStep(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append([p.detach().clone() for p in model.parameters()])


class SignalSwallowedByAFinalizer(TrainerCallback):
    """At step 2, a SIGINT whose KeyboardInterrupt lands inside a `__del__`, where Python prints and drops
    it: the way a Ctrl-C was lost mid-training on a loaded machine."""

    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        if self.steps == 2:
            Finalizer()  # dropped at once: its __del__ receives the signal


class Finalizer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here, inside the finalizer


def test_a_ctrl_c_a_finalizer_swallows_still_stops_training_at_the_next_step(trained, tmp_path, monkeypatch):
    cfg, _, seed, student, _, _ = trained
    signalled, reported = SignalSwallowedByAFinalizer(), []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)  # what Python would print to stderr
    with interrupts.stoppable():
        with pytest.raises(interrupts.Stopped):
            finetune(student.base_model(), student.tokenizer, seed, cfg.train, tmp_path, progress=signalled)
        assert interrupts.received() == "SIGINT"
    assert signalled.steps == 2  # not one step more
    # Python's "Exception ignored in ... Traceback" report of the swallowed one is left out
    assert not reported


def test_weight_averaging_keeps_the_mean_of_the_last_steps_weights(trained, tmp_path):
    cfg, _, seed, student, _, _ = trained
    recipe = dataclasses.replace(cfg.train, epochs=3, average_weights=1 / 3)  # 9 steps: the last 3 averaged
    after = WeightsAfterEachStep()
    model, stats = finetune(student.base_model(), student.tokenizer, seed, recipe, tmp_path, progress=after)
    assert stats.steps == 9 and stats.averaged_steps == 3 and len(after.steps) == 9
    for i, p in enumerate(model.parameters()):
        mean = torch.stack([step[i] for step in after.steps[-3:]]).mean(0)
        assert torch.allclose(p, mean, atol=1e-6)
    assert not torch.allclose(next(model.parameters()), after.steps[-1][0])  # not the last step's


def test_a_weight_averaging_share_outside_0_1_is_one_line():
    with pytest.raises(BenchError, match=r"train.average_weights=1.5 must be a share .* in \[0, 1\]"):
        typed_config(*QUICK, "train.average_weights=1.5")


def test_training_from_base_changes_only_the_copy(trained):
    _, _, _, student, model, _ = trained
    base = student.base_model()
    assert not torch.equal(next(base.parameters()), next(model.parameters()))


def test_gsm8k_trains_and_scores_on_the_authors_prompts(data_dir, tmp_path):
    """train.py's chain-of-thought prompt for training, GSM8K/eval.py's for scoring (SqueezeAILab/LLM2LLM)."""
    cfg = typed_config("task=gsm8k")
    data = load_task(cfg.task, str(data_dir))
    training = "The following question is based on the following passage.\n\n{}\n\nAnswer:"
    assert data.train[0].prompt == training.format(data.train[0].record["question"])
    name = write_lm_eval_task(cfg.task, "test", data.test[:2], cfg.eval, tmp_path)
    doc = json.loads((tmp_path / f"{name}.jsonl").read_text().splitlines()[0])
    scoring = "Solve the below question step by step.\n\n{}\n\nAnswer:"
    assert doc["prompt"] == scoring.format(data.test[0].record["question"])


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
    result = evaluate(model, student.tokenizer, cfg.task, "seed", seed[:24], cfg.eval, tmp_path)
    assert [r["id"] for r in result.records] == [e.id for e in seed[:24]]
    labels = {e.id: e.label for e in seed}
    for record in result.records:  # lm-eval's per-example metric is the suite's scoring
        assert record["correct"] == KINDS["classification"].is_correct(
            record["generation"], labels[record["id"]], cfg.task.labels
        )
    assert result.accuracy == pytest.approx(sum(r["correct"] for r in result.records) / 24)
    assert 0 < result.stderr < 0.2 or result.accuracy in (0.0, 1.0)
    assert set(result.wrong_ids) == {r["id"] for r in result.records if not r["correct"]}


def test_the_saved_weights_score_as_the_in_memory_model_through_lm_eval_by_path(trained, tmp_path):
    """eval.backend=vllm hands lm-eval the stage's weights as a folder; HFLM loading that same folder by
    path (the way `lm_eval --model hf` does) scores exactly as the in-memory model."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    cfg, data, _, student, model, _ = trained
    in_memory = evaluate(model, student.tokenizer, cfg.task, "test", data.test[:16], cfg.eval, tmp_path / "a")
    save_for_scoring(model, student.tokenizer, tmp_path / "weights")
    name = write_lm_eval_task(cfg.task, "test", data.test[:16], cfg.eval, tmp_path / "tasks")
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tmp_path / "weights")},
        device="cpu",
        tasks=[name],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
    )
    assert output["results"][name]["acc,none"] == in_memory.accuracy


def test_vllm_scoring_without_vllm_is_one_line(trained, tmp_path):
    cfg, data, _, student, model, _ = trained
    vllm = dataclasses.replace(cfg.eval, backend="vllm")
    with pytest.raises(
        BenchError, match=r"^eval.backend=vllm needs vLLM, which is not installed: pip install vllm"
    ):
        evaluate(model, student.tokenizer, cfg.task, "test", data.test[:4], vllm, tmp_path)


def test_greedy_and_sampled_decoding():
    gsm8k = typed_config("task=gsm8k", "task.scoring_decoding=null")
    assert generation_kwargs(gsm8k.task, gsm8k.eval) == {
        "until": ["\n\n"],
        "do_sample": False,
        "max_gen_toks": 256,
    }
    sampled = typed_config("task=gsm8k")  # the authors' scoring
    assert generation_kwargs(sampled.task, sampled.eval) == {
        "until": ["\n\n"],
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_gen_toks": 100,
    }


def test_lora_student_trains_and_is_scored(data_dir, tmp_path):
    cfg = typed_config(*QUICK, "student.lora.enabled=true", "student.lora.r=4", "eval.limit=4")
    data = load_task(cfg.task, str(data_dir))
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train))
    model, stats = finetune(student.base_model(), student.tokenizer, data.train[:16], cfg.train, tmp_path)
    assert stats.steps == 1
    result = evaluate(model, student.tokenizer, cfg.task, "test", data.test[:4], cfg.eval, tmp_path)
    assert len(result.records) == 4
    assert result.accuracy == pytest.approx(sum(r["correct"] for r in result.records) / 4)


@pytest.mark.parametrize(
    "dtype, weights, changed_at_least, changed_at_most",
    [
        ("auto", torch.float32, 0.9, 1.0),  # the default: fp32 master weights, bf16 compute
        ("bfloat16", torch.bfloat16, 0.0, 0.5),  # the switch: pure bf16, most updates lost
    ],
)
def test_mixed_precision_keeps_small_updates_and_pure_bf16_loses_them(
    data_dir, tmp_path, dtype, weights, changed_at_least, changed_at_most
):
    """One AdamW step at the papers' lr 2e-5 with bf16 autocast (CPU autocast exists): fp32 master weights
    take it; bf16 weights, which student.dtype=bfloat16 selects, round most of it away."""
    from bench.training import autocast, training_arguments

    cfg = typed_config(
        *QUICK,
        f"student.dtype={dtype}",
        "train.mixed_precision=bf16",
        "train.learning_rate=2e-5",
        "train.lr_scheduler=constant",
        "train.warmup_ratio=0",
        "train.effective_batch_size=16",
        "train.per_device_batch_size=16",
        "train.weight_decay=0",
    )
    data = load_task(cfg.task, str(data_dir))
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train))
    model = student.base_model()
    assert next(model.parameters()).dtype == weights and autocast(cfg.train, weights) == "bf16"
    assert training_arguments(cfg.train, tmp_path, "bf16").bf16  # what the Trainer is given
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model, stats = finetune(model, student.tokenizer, data.train[:16], cfg.train, tmp_path)
    assert stats.steps == 1
    changed = sum(int((p.detach() != before[name]).sum()) for name, p in model.named_parameters())
    share = changed / sum(p.numel() for p in before.values())
    assert changed_at_least <= share <= changed_at_most, share


def test_on_a_bf16_gpu_the_default_is_fp32_weights_with_bf16_compute(monkeypatch):
    """What `auto` means where it matters, a GPU with bf16 (its availability patched in): the student keeps
    fp32 master weights and trains with bf16 autocast; the hf teacher, which only generates, loads bf16."""
    from bench.students import torch_dtype
    from bench.training import autocast

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    cfg = typed_config(*QUICK)
    student = Student(cfg.student, ["a b c"] * 50)
    assert student.dtype == torch.float32 and autocast(cfg.train, student.dtype) == "bf16"
    assert torch_dtype("auto") == torch.bfloat16
    assert autocast(typed_config(*QUICK, "train.mixed_precision=no").train, torch.float32) == "no"
    pure = Student(typed_config(*QUICK, "student.dtype=bfloat16").student, ["a b c"] * 50)
    assert pure.dtype == torch.bfloat16


@pytest.mark.parametrize("effective, per_device, world, split", [
    (16, 16, 1, (16, 1)), (16, 16, 2, (8, 1)),  # two ranks halve the batch, not double the effective one
    (128, 4, 1, (4, 32)), (128, 4, 4, (4, 8)),
])
def test_the_effective_batch_is_the_recipes_at_any_number_of_ranks(effective, per_device, world, split):
    recipe = dataclasses.replace(typed_config().train, effective_batch_size=effective,
                                 per_device_batch_size=per_device)
    assert batch_split(recipe, world) == split


def test_fsdp_full_shard_reaches_the_trainer_on_several_ranks(tmp_path):
    from transformers import TrainingArguments

    recipe = dataclasses.replace(typed_config("experiment=finetune_7b").train, activation_checkpointing=True)
    assert sharding_arguments(recipe, "fsdp", world_size=1) == {"activation_checkpointing": True}
    assert sharding_arguments(recipe, "none", world_size=4) == {"activation_checkpointing": True}
    # what the Trainer makes of the four ranks' settings (the plugin accelerate shards with)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, **sharding_arguments(recipe, "fsdp", 4))
    plugin = args.fsdp_plugin_args
    assert args.fsdp and plugin["reshard_after_forward"] is True and plugin["fsdp_version"] == 2  # full shard
    assert plugin["activation_checkpointing"] is True and not args.activation_checkpointing
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def test_a_three_step_run_starts_at_its_learning_rate(data_dir, tmp_path):
    """LLM2LLM's recipe on 100 examples is 3 optimizer steps; the Trainer's rounded-up 3% warmup made the
    first of them a step at lr 0."""
    from transformers import TrainerCallback

    from bench.training import optimizer_steps, warmup_steps

    recipe = typed_config("train=llm2llm").train
    assert optimizer_steps(recipe, 100) == 3 and warmup_steps(recipe, 3) == 0
    assert optimizer_steps(recipe, 1000) == 24 and warmup_steps(recipe, 24) == 0
    assert warmup_steps(recipe, 100) == 3 and optimizer_steps(recipe, 100, world_size=2) == 3

    rates = []

    class Rates(TrainerCallback):
        def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
            rates.append(lr_scheduler.get_last_lr()[0])

    cfg = typed_config(*QUICK, "train.epochs=3", "train.effective_batch_size=16", "train.warmup_ratio=0.03")
    data = load_task(cfg.task, str(data_dir))
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train))
    _, stats = finetune(student.base_model(), student.tokenizer, data.train[:16], cfg.train, tmp_path,
                        Rates())
    assert stats.steps == 3 and rates[0] == cfg.train.learning_rate


def test_a_stage_that_barely_trained_or_never_answers_is_doubted():
    from bench.evaluation import EvalResult, doubts

    records = [{"id": str(i), "label": "NUM", "generation": g, "prediction": g.strip(),
                "valid": g.strip() == "NUM", "correct": g.strip() == "NUM"}
               for i, g in enumerate([" NUM", " 10", " Physics", " 1"])]
    result = EvalResult("test", 0.25, 0.2, records)
    assert result.invalid_share == 0.75
    assert doubts(3, result.invalid_share) == ["3 optimizer step(s)", "75% of test generations no answer"]
    assert doubts(35, 0.1) == []
    assert KINDS["classification"].is_answer("NUM", ["NUM", "LOC"]) and not KINDS["classification"].is_answer(
        "10", ["NUM", "LOC"])
    assert KINDS["math"].is_answer("3", []) and not KINDS["math"].is_answer(None, [])


@pytest.mark.parametrize("architecture", ["llama", "gpt_neox"])  # the tiny and SmolLM2 students; Pythia's
def test_a_padding_free_batch_gives_the_padded_batchs_loss_and_gradients(trained, architecture):
    """Examples end to end in one row, positions restarting: the same loss and gradients as the padded
    batch, so no token attends across examples and no label is lost or added."""
    from transformers import AutoConfig, AutoModelForCausalLM, DataCollatorForSeq2Seq

    from bench.training import PaddingFreeBatches

    _, _, seed, student, _, _ = trained
    features = encode(seed[:6], student.tokenizer, max_length=512)
    assert len({len(f["input_ids"]) for f in features}) > 1  # lengths differ: the padded batch pads
    config = AutoConfig.for_model(architecture, vocab_size=student.tokenizer.vocab_size, hidden_size=32,
                                  intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).train()
    padded = DataCollatorForSeq2Seq(student.tokenizer, padding="longest", label_pad_token_id=IGNORE)(features)
    flat = PaddingFreeBatches()(features)
    assert flat["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in features))
    results = []
    for batch in (padded, flat):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (padded_loss, padded_grads), (flat_loss, flat_grads) = results
    assert flat_loss == pytest.approx(padded_loss, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(padded_grads, flat_grads))


def test_padding_free_training_matches_padded_training(trained, tmp_path):
    """The same recipe and batches, padded or padding-free: the same training within float noise, and
    no padding at all."""
    cfg, _, seed, student, _, _ = trained
    runs = {}
    for batching in ("padded", "padding_free"):
        recipe = dataclasses.replace(cfg.train, batching=batching)
        model, stats = finetune(student.base_model(), student.tokenizer, seed, recipe, tmp_path / batching)
        runs[batching] = (stats, torch.cat([p.detach().flatten() for p in model.parameters()]))
    (padded, padded_weights), (flat, flat_weights) = runs["padded"], runs["padding_free"]
    assert padded.padded_tokens > 0 and flat.padded_tokens == 0 and flat.real_tokens == padded.real_tokens
    assert flat.steps == padded.steps and flat.train_loss == pytest.approx(padded.train_loss, rel=1e-4)
    assert (flat_weights - padded_weights).abs().max() < 1e-4


def test_likelihood_scoring_is_the_students_own_label_probabilities(trained, tmp_path):
    """eval.likelihood's label_logprob and choice_acc against the log-probabilities computed here by hand:
    each label's summed token log-probability after prompt + ' ', normalised over the label set."""
    cfg, data, _, student, model, _ = trained
    tests = data.test[:12]
    result = likelihood(model, student.tokenizer, cfg.task, tests, cfg.eval, tmp_path)
    tokenizer, labels = student.tokenizer, list(cfg.task.labels)
    model.eval()
    by_hand, top = [], []
    for example in tests:
        context = tokenizer(example.prompt)["input_ids"]
        scores = []
        for label in labels:
            whole = tokenizer(f"{example.prompt} {label}")["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
            scores.append(sum(float(logits[i - 1, whole[i]]) for i in range(len(context), len(whole))))
        gold = labels.index(example.label)
        by_hand.append(scores[gold] - float(torch.tensor(scores).logsumexp(0)))
        top.append(max(range(len(labels)), key=scores.__getitem__) == gold)
    assert result.metric == "label_logprob"
    assert result.per_item == pytest.approx(by_hand, abs=1e-3)
    assert result.value == pytest.approx(sum(by_hand) / len(by_hand), abs=1e-3) and result.value < 0
    assert result.choice_acc == pytest.approx(sum(top) / len(top))


def test_gsm8k_likelihood_is_the_gold_solutions_per_token_log_likelihood(data_dir, tmp_path):
    cfg = typed_config("task=gsm8k", "eval.likelihood=true")
    data = load_task(cfg.task, str(data_dir))
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train[:200]))
    model, tokenizer, example = student.base_model().eval(), student.tokenizer, data.test[0]
    result = likelihood(model, tokenizer, cfg.task, [example], cfg.eval, tmp_path)
    context = tokenizer(example.prompt)["input_ids"]
    whole = tokenizer(f"{example.prompt} {example.target}")["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    total = sum(float(logits[i - 1, whole[i]]) for i in range(len(context), len(whole)))
    assert result.metric == "solution_logprob" and result.choice_acc is None
    assert result.value == pytest.approx(total / (len(whole) - len(context)), rel=0.02)
