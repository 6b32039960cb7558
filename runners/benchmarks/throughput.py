"""Training-throughput benchmark: the suite's trainer vs a plain transformers Trainer, same model,
same data, same hyper-parameters, in one process. Prints tokens/s, achieved FLOP/s and its share of
this machine's measured matmul FLOP/s, and the share of padding tokens.

    python -m runners.benchmarks.throughput [config overrides, e.g. task=sst2 seed_set.size=1000]
"""

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from transformers import Trainer

from bench.config import register_configs, validated
from bench.seed_set import sample_seed_set
from bench.students import Student, parameter_count
from bench.tasks import load_task
from bench.training import IGNORE, CountingCollator, autocast, encode, finetune, training_arguments

CONF = Path(__file__).resolve().parents[2] / "conf"


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
    collator = CountingCollator(tokenizer, padding="longest", label_pad_token_id=IGNORE)
    args = training_arguments(dataclasses.replace(cfg, group_by_length=False), output_dir,
                              autocast(cfg, next(model.parameters()).dtype), ["none"])
    trainer = Trainer(model=model, args=args,
                      train_dataset=features, data_collator=collator)
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
    peak = matmul_flops()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        _, stats = finetune(student.base_model(), student.tokenizer, seed_set, cfg.train, Path(scratch))
        rows.append(("suite trainer (length-grouped)", stats.seconds, stats.real_tokens, stats.padded_tokens))
        rows.append(("plain transformers Trainer", *plain_trainer(student.base_model(), student.tokenizer,
                                                                   seed_set, cfg.train, Path(scratch))))
    print(
        f"\n{cfg.task.name}, {len(seed_set)} examples x {cfg.train.epochs:g} epochs, "
        f"student {cfg.student.name} "
        f"({params / 1e6:.1f}M parameters), {torch.get_num_threads()} threads, "
        f"measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; model FLOPs = 6 x parameters x tokens\n"
    )
    print("| trainer | seconds | real tokens/s | padding share | useful GFLOP/s | share of matmul peak |")
    print("|---|---|---|---|---|---|")
    for name, seconds, real, padded in rows:
        useful = 6 * params * real / seconds
        print(f"| {name} | {seconds:.1f} | {real / seconds:,.0f} | {padded / (real + padded):.1%} | "
              f"{useful / 1e9:.2f} | {useful / peak:.1%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
