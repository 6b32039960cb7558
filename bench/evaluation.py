"""Scoring a student through lm-evaluation-harness: each (task, split) becomes an lm-eval task YAML
over a JSONL of the suite's own prompts (absolute paths), evaluated with `simple_evaluate` on the
in-memory model. Per-example results come back so LLM2LLM can find the seed examples it gets wrong.

Beside the papers' generation accuracy, `eval.likelihood` scores the test split by log-likelihood, which
is far less noisy at small scale (Heineman et al. 2025, "Signal and Noise"): every item adds a continuous
score and none is "no answer". Classification: lm-eval's `multiple_choice` over the label set (its `acc`,
and the gold label's log-probability normalised over the labels); math: the gold solution's per-token
log-likelihood."""

import functools
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench import task_kinds
from bench.config import EvalConfig, TaskConfig
from bench.distributed import Ranks
from bench.errors import BenchError, first_line
from bench.task_kinds import task_kind
from bench.tasks import Example, question_in, student_prompt


@dataclass
class EvalResult:
    split: str
    accuracy: float
    stderr: float
    records: list[dict]  # per example: id, label, generation, prediction, valid (an answer at all), correct

    @property
    def wrong_ids(self) -> list[str]:
        return [record["id"] for record in self.records if not record["correct"]]

    @property
    def invalid_share(self) -> float:
        """The share of generations that are no answer at all (no number; no label of the set)."""
        return sum(not record["valid"] for record in self.records) / max(1, len(self.records))


@dataclass
class LikelihoodResult:
    metric: str  # LABEL_LOGPROB or SOLUTION_LOGPROB
    value: float  # the mean of per_item: higher is better
    choice_acc: float | None  # classification: lm-eval multiple_choice's acc (the likeliest label is gold)
    per_item: list[float]


def likelihood_metrics(prefix: str, result: LikelihoodResult | None) -> dict:
    """A stage's likelihood scores as tracker metrics: <prefix>/label_logprob (or solution_logprob),
    <prefix>/choice_acc."""
    if result is None:
        return {}
    choice = {} if result.choice_acc is None else {f"{prefix}/choice_acc": result.choice_acc}
    return {f"{prefix}/{result.metric}": result.value, **choice}


LABEL_LOGPROB = "label_logprob"  # log p(gold label | prompt), normalised over the task's labels
SOLUTION_LOGPROB = "solution_logprob"  # the gold solution's log-likelihood per token


FEW_STEPS = 10  # fewer optimizer steps than this leave a pretrained student about where it started
MOSTLY_INVALID = 0.5  # a larger share of generations that are no answer: the score measures the format


def doubts(train_steps: int, invalid_share: float) -> list[str]:
    """Why a stage's score may say little about what the data taught: the summary, the run log and the
    report's flag column all read these."""
    found = []
    if train_steps < FEW_STEPS:
        found.append(f"{train_steps} optimizer step(s)")
    if invalid_share > MOSTLY_INVALID:
        found.append(f"{invalid_share:.0%} of test generations no answer")
    return found


def decoding_of(task: TaskConfig, cfg: EvalConfig) -> str:
    """The task's own scoring decoding (its paper's), else eval.decoding."""
    return str(task.scoring_decoding or cfg.decoding)


def generation_kwargs(task: TaskConfig, cfg: EvalConfig, decoding: str | None = None) -> dict:
    until = list(task_kind(task.kind).stop)
    if (decoding or decoding_of(task, cfg)) == "greedy":
        return {"until": until, "do_sample": False, "max_gen_toks": task.max_new_tokens}
    s = cfg.sampling
    return {"until": until, "do_sample": True, "temperature": s.temperature, "top_p": s.top_p,
            "max_gen_toks": s.max_new_tokens}


def write_lm_eval_task(task: TaskConfig, split: str, examples: list[Example], cfg: EvalConfig,
                       directory: Path, decoding: str | None = None, likelihood: bool = False) -> str:
    """Write <directory>/<name>.yaml, its data and its scoring (a copy of bench/task_kinds.py, which lm-eval
    loads by file): a folder plain `lm_eval --include_path` runs. Return the lm-eval task name.
    `likelihood`: the log-likelihood scoring of the same prompts instead of generation."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"synthbench_{task.name}_{split}" + ("_likelihood" if likelihood else "")
    data = directory / f"{name}.jsonl"
    with data.open("w") as out:
        for example in examples:
            prompt = example.prompt if task.scoring_instruction is None else \
                student_prompt(task, question_in(example.prompt, task), task.scoring_instruction)
            doc = {"id": example.id, "prompt": prompt, "target": example.target,
                   "label": example.label, "kind": task.kind, "labels": list(task.labels)}
            if likelihood and task.labels:
                doc["gold"] = list(task.labels).index(example.label)
            out.write(json.dumps(doc) + "\n")
    spec = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{target}}",
        "target_delimiter": " ",  # the student trains on prompt + " " + target
        "num_fewshot": 0,
        "metadata": {"version": 1},
    }
    accuracy = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
    if likelihood and task.labels:
        spec.update({"output_type": "multiple_choice", "doc_to_choice": "{{labels}}",
                     "doc_to_target": "{{gold}}", "metric_list": accuracy})
    elif likelihood:
        # lm-eval's acc here: the solution is the greedy continuation (its perplexity overflows on
        # a whole solution); the per-token log-likelihood is read from the samples
        spec.update({"output_type": "loglikelihood", "metric_list": accuracy})
    else:
        spec.update({"output_type": "generate_until", "metric_list": accuracy,
                     "generation_kwargs": generation_kwargs(task, cfg, decoding)})
    text = yaml.safe_dump(spec, sort_keys=False, width=1000)
    if not likelihood:
        shutil.copyfile(task_kinds.__file__, directory / "synthbench_scoring.py")
        # a YAML tag that safe_dump cannot write: lm-eval resolves it to the shim's function
        text += "process_results: !function synthbench_scoring.process_results\n"
    (directory / f"{name}.yaml").write_text(text)
    return name


def run_lm_eval(model, tokenizer, cfg: EvalConfig, name: str, folder: Path, work_dir: Path,
                ranks: Ranks | None) -> tuple[dict, list] | None:
    """lm-eval's metrics and samples of the task `name` in `folder`; over several ranks lm-eval's
    data-parallel path shards the examples and gathers the scores: None on the ranks other than 0."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if hasattr(model, "merge_and_unload"):  # a LoRA student is scored with its adapters merged
        model = model.merge_and_unload()
    model.eval()
    if cfg.backend == "vllm":
        if ranks is not None and not ranks.main:
            return None  # vLLM takes the node's GPUs from rank 0
        lm = vllm_model(model, tokenizer, cfg, work_dir / "weights")
    else:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    if cfg.backend == "hf" and ranks is not None and ranks.world > 1:
        # lm-eval shards only the models it loads itself (`accelerate launch`): the in-memory model's
        # replicas join the same sharding and gathering through these three settings
        from accelerate import Accelerator

        lm._rank, lm._world_size, lm.accelerator = ranks.rank, ranks.world, Accelerator()
    output = lm_eval.simple_evaluate(
        model=without_bars(lm),
        tasks=[name],
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=True,
        bootstrap_iters=1,  # accuracy's stderr is closed-form; > 0 only switches it on
    )
    if output is None:  # a rank other than 0: its share is in rank 0's result
        return None
    return output["results"][name], sorted(output["samples"][name], key=lambda s: s["doc_id"])


def evaluate(model, tokenizer, task: TaskConfig, split: str, examples: list[Example], cfg: EvalConfig,
             work_dir: Path, ranks: Ranks | None = None, decoding: str | None = None) -> EvalResult | None:
    """Generate and score: the result on rank 0, None on the others."""
    folder = work_dir / "lm_eval" / split
    name = write_lm_eval_task(task, split, examples, cfg, folder, decoding)
    scored = run_lm_eval(model, tokenizer, cfg, name, folder, work_dir, ranks)
    if scored is None:
        return None
    metrics, samples = scored
    records, kind = [], task_kind(task.kind)
    for sample in samples:
        doc, generation = sample["doc"], sample["resps"][0][0]
        prediction = kind.prediction(generation, task.labels)
        records.append({
            "id": doc["id"],
            "label": doc["label"],
            "generation": generation,
            "prediction": prediction,
            "valid": kind.is_answer(prediction, task.labels),
            "correct": bool(sample["acc"]),
        })
    return EvalResult(split, metrics["acc,none"], metrics["acc_stderr,none"], records)


def likelihood(model, tokenizer, task: TaskConfig, examples: list[Example], cfg: EvalConfig, work_dir: Path,
               ranks: Ranks | None = None) -> LikelihoodResult | None:
    """The test split scored by log-likelihood (the module's docstring): on rank 0, None on the others."""
    folder = work_dir / "lm_eval" / "test_likelihood"
    name = write_lm_eval_task(task, "test", examples, cfg, folder, likelihood=True)
    scored = run_lm_eval(model, tokenizer, cfg, name, folder, work_dir, ranks)
    if scored is None:
        return None
    metrics, samples = scored
    if task.labels:  # resps: one [(log-likelihood, is greedy)] per label
        per_item = [gold_share(sample["resps"], sample["doc"]["gold"]) for sample in samples]
        return LikelihoodResult(LABEL_LOGPROB, sum(per_item) / len(per_item), metrics["acc,none"], per_item)
    lengths = [len(tokenizer(" " + sample["doc"]["target"], add_special_tokens=False)["input_ids"])
               for sample in samples]
    per_item = [sample["resps"][0][0][0] / max(1, n) for sample, n in zip(samples, lengths, strict=True)]
    return LikelihoodResult(SOLUTION_LOGPROB, sum(per_item) / len(per_item), None, per_item)


def gold_share(resps: list, gold: int) -> float:
    """log p(gold) among the choices: the gold choice's log-likelihood minus the log-sum-exp of all."""
    lls = [resp[0][0] for resp in resps]
    top = max(lls)
    return lls[gold] - (top + math.log(sum(math.exp(ll - top) for ll in lls)))


def vllm_model(model, tokenizer, cfg: EvalConfig, folder: Path):
    """lm-eval's vLLM model on the stage's weights, saved in HF format to `folder` (vLLM loads from
    disk); the training copy moves off the GPU first."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise BenchError("eval.backend=vllm needs vLLM, which is not installed: pip install vllm (on a GPU "
                         "machine), or score with eval.backend=hf")
    from lm_eval.api.registry import get_model

    save_for_scoring(model, tokenizer, folder)
    model.to("cpu")
    return get_model("vllm")(pretrained=str(folder), tokenizer=str(folder), dtype="auto",
                             batch_size="auto", **cfg.vllm_args)


def without_bars(lm):
    """lm-eval's per-request progress bars off: they flood a job's console and run.log."""
    for name in ("generate_until", "loglikelihood"):
        setattr(lm, name, functools.partial(getattr(lm, name), disable_tqdm=True))
    return lm


def save_for_scoring(model, tokenizer, folder: Path) -> None:
    """The weights and tokenizer as a Hugging Face folder: what `vllm` and plain `lm_eval` load."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def zero_shot(model, tokenizer, tasks: list[str], include_path: str | None, batch_size: int,
              limit: int | None = None) -> dict:
    """lm-eval tasks by name (its built-in ones load their data from the Hub; `include_path` adds a
    folder of task YAMLs), zero-shot: {task: {metric: value}}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    try:
        output = lm_eval.simple_evaluate(model=without_bars(lm), tasks=list(tasks), num_fewshot=0,
                                         limit=limit, task_manager=TaskManager(include_path=include_path))
    except (KeyError, ValueError, OSError, ConnectionError) as error:
        raise BenchError(
            f"zero-shot tasks {list(tasks)}: {first_line(error)} "
            "(check the task names with `lm_eval ls tasks`, and Hub access for their data)"
        ) from None
    return {task: {metric.split(",")[0]: value for metric, value in metrics.items()
                   if "," in metric and isinstance(value, int | float)}  # "acc,none": lm-eval's metric,filter
            for task, metrics in output["results"].items()}
