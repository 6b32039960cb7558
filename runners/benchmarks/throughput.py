"""Throughput benchmark, in one process: training (the suite's trainer, padding-free and padded by
length, vs a plain transformers Trainer with its default collator: same model, data and hyper-parameters;
tokens/s, the share of padding, achieved FLOP/s and MFU, against compute.gpu_peak_tflops on a GPU or
this machine's measured fp32 matmul peak on a CPU), then scoring the test split (examples/s) with
eval.backend=hf and, where vLLM is installed, vllm.

    python -m runners.benchmarks.throughput [overrides, e.g. student=smollm2_135m train=small_lm]
"""

import dataclasses
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from transformers import PrinterCallback, Trainer

from bench.config import conf_dir, validated
from bench.config_store import register_configs
from bench.evaluation import evaluate
from bench.seed_set import sample_seed_set
from bench.students import Student, parameter_count
from bench.tasks import load_task
from bench.training import IGNORE, PaddedBatches, autocast, encode, finetune, training_arguments

CONF = conf_dir()


def matmul_flops(size: int = 1024, repeats: int = 20) -> float:
    """Best-of sustained fp32 matmul FLOP/s of this machine, the ceiling for the training runs."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best


def plain_trainer(model, tokenizer, examples, cfg, output_dir):
    """What a transformers user writes: Trainer, random batches padded to their longest sequence."""
    features = encode(examples, tokenizer, cfg.max_length)
    collator = PaddedBatches(tokenizer, padding="longest", label_pad_token_id=IGNORE)
    args = training_arguments(dataclasses.replace(cfg, batching="padded"), output_dir,
                              autocast(cfg, next(model.parameters()).dtype))
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collator)
    trainer.remove_callback(PrinterCallback)  # its loss dicts would bury the table
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started, collator.real_tokens, collator.padded_tokens


def main(overrides) -> None:
    if {"-h", "--help"} & set(overrides):
        print(f"usage: {__doc__.strip().splitlines()[-1].strip()}\n\n{__doc__.split(chr(10) + chr(10))[0]}")
        return
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = validated(compose("config", overrides=["logger=none", *overrides]))
    data = load_task(cfg.task, cfg.data_dir)
    seed_set = sample_seed_set(data.train, cfg.seed_set, cfg.task.name)
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train))
    params = parameter_count(student.base_model())
    if torch.cuda.is_available():
        peak = cfg.compute.gpu_peak_tflops * 1e12
        against = f"{torch.cuda.get_device_name()}, bf16 peak (compute.gpu_peak_tflops)"
    else:
        peak, against = matmul_flops(), f"{torch.get_num_threads()} CPU threads, measured fp32 matmul peak"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        models = {}
        for batching in ("padding_free", "by_length"):
            recipe = dataclasses.replace(cfg.train, batching=batching)
            models[batching], stats = finetune(student.base_model(), student.tokenizer, seed_set, recipe,
                                               Path(scratch))
            rows.append((f"suite trainer, batching={batching}", stats.seconds, stats.real_tokens,
                         stats.padded_tokens))
        rows.append(("plain transformers Trainer", *plain_trainer(student.base_model(), student.tokenizer,
                                                                   seed_set, cfg.train, Path(scratch))))
        test = data.test[: cfg.eval.limit]
        scoring = scoring_rates(models["padding_free"], student.tokenizer, cfg, test, Path(scratch))
    print(
        f"\n{cfg.task.name}, {len(seed_set)} examples x {cfg.train.epochs:g} epochs, "
        f"student {cfg.student.name} ({params / 1e6:.1f}M parameters); {against} {peak / 1e12:.3g} TFLOP/s; "
        "model FLOPs = 6 x parameters x tokens\n"
    )
    print("| trainer | seconds | real tokens/s | padding share | useful TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|")
    for name, seconds, real, padded in rows:
        useful = 6 * params * real / seconds
        print(f"| {name} | {seconds:.1f} | {real / seconds:,.0f} | {padded / (real + padded):.1%} | "
              f"{useful / 1e12:.4g} | {useful / peak:.1%} |")
    print("\n" + scoring_table(scoring))


def scoring_rates(model, tokenizer, cfg, examples, scratch: Path) -> list[dict]:
    """The test split scored through lm-eval with each backend this machine has."""
    rows = []
    for backend in ("hf", "vllm"):
        if backend == "vllm" and importlib.util.find_spec("vllm") is None:
            rows.append({"backend": backend, "note": "not installed (pip install vllm, on a GPU machine)"})
            continue
        started = time.perf_counter()
        settings = dataclasses.replace(cfg.eval, backend=backend)
        result = evaluate(model, tokenizer, cfg.task, "test", examples, settings, scratch / backend)
        seconds = time.perf_counter() - started
        rows.append({"backend": backend, "examples": len(examples), "seconds": round(seconds, 2),
                     "examples_per_second": round(len(examples) / seconds, 2), "accuracy": result.accuracy})
    return rows


def scoring_table(rows: list[dict]) -> str:
    lines = ["| scoring backend | test examples | seconds | examples/s | accuracy |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} | - | - | - | {r['note']} |" if "note" in r else
                     f"| {r['backend']} | {r['examples']} | {r['seconds']:.1f} | "
                     f"{r['examples_per_second']:.1f} | {r['accuracy']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
