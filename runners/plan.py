"""The grid planner: every cell of a preset with what it will take, before anything is submitted.

    python -m runners.plan experiment=llm2llm [overrides, sweeps too: task=gsm8k,trec]

Per cell: the student's parameters, training tokens (an upper bound for LLM2LLM: every seed example
wrong every round), memory per GPU under compute.sharding at the recipe's batch and length, whether
that fits compute.gpus GPUs of compute.gpu_memory_gb (and, when not, what would), GPU-hours at
compute.mfu, teacher queries, tokens and dollars from the teacher's prices; then the grid's totals.
The arithmetic and its assumptions are in bench/resources.py. Task data comes from BENCH_DATA_DIR or
the Hub (the seed set is a fraction of the training pool)."""

import math
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from bench.config import BenchConfig, check_yaml_syntax, conf_dir
from bench.config_store import register_configs
from bench.errors import BenchError, first_line
from bench.resources import (
    GIB,
    Memory,
    generation_flops,
    gpu_seconds,
    student_shape,
    tokens_of,
    training_flops,
    training_memory,
)
from bench.seed_set import seed_set_size
from bench.store import find_records
from bench.tasks import load_task
from bench.teachers import query_budget
from bench.training import batch_split
from runners.inputs import settled
from runners.sweep import grid_cells

CONF = conf_dir()
PROMPT_OVERHEAD = 300  # tokens of instructions and worked example around a teacher request's source


@contextmanager
def composer():
    """Hydra's composition: the running app's (a callback), or this repository's conf/."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def cells(overrides: list[str]) -> list[list[str]]:
    """Each cell's overrides: the preset's sweep and the command line, as a multirun expands them."""
    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides)
             if not o.is_sweep_override()]
    base = compose("config", overrides=fixed, return_hydra_config=True)
    return grid_cells(base.hydra.sweeper.get("params") or {}, overrides)


def task_figures(task, data_dir) -> dict:
    """Training pool size, characters per training example and per test prompt, test split size."""
    if (task.name, data_dir) not in _FIGURES:
        _FIGURES[task.name, data_dir] = figures_of(load_task(task, data_dir))
    return _FIGURES[task.name, data_dir]


_FIGURES: dict = {}


def figures_of(data) -> dict:
    return {"pool": len(data.train), "test": len(data.test),
            "train_chars": sum(len(e.prompt) + len(e.target) + 1 for e in data.train) / len(data.train),
            "prompt_chars": sum(len(e.prompt) for e in data.test) / max(1, len(data.test))}


def predicted_memory(config: BenchConfig, shape, batch: int, length: int | None = None) -> Memory:
    """The planner's memory per process, by part, for `batch` sequences of `length` tokens (the recipe's
    train.max_length unless given)."""
    c, t, student = config.compute, config.train, config.student
    return training_memory(
        shape,
        gpus=c.processes,
        fsdp=c.sharding == "fsdp",
        weight_bytes=4 if student.dtype in ("auto", "float32") else 2,
        mixed_precision=t.mixed_precision != "no",
        batch=batch,
        length=length or t.max_length,
        checkpointing=t.activation_checkpointing,
    )


def fitting(config: BenchConfig, shape, batch: int) -> tuple[float, bool]:
    """Memory per process (bytes) and whether it fits: a GPU's memory, or on CPUs (compute.gpus=0) the
    process's share of compute.memory_gb."""
    total = predicted_memory(config, shape, batch).total
    return total, total <= capacity_gb(config.compute) * GIB


def capacity_gb(c) -> float:
    return c.gpu_memory_gb if c.gpus else c.memory_gb / c.processes


def what_would_fit(config: BenchConfig) -> str:
    """The smallest change the planner finds that fits: FSDP over more GPUs, checkpointing, or LoRA; on
    CPUs the node memory the cell needs."""
    c = config.compute
    if not c.gpus:
        memory, _ = fitting(config, student_shape(config.student), batch_split(config.train, c.processes)[0])
        return f"compute.memory_gb={math.ceil(memory * c.processes / GIB) + 1}"
    tries = []
    if not config.student.lora.enabled:
        tries += [
            (f"compute.gpus={n} compute.sharding=fsdp",
             {"compute": replace(c, gpus=n, processes=n, sharding="fsdp")})
            for n in (2, 4, 8, 16)
            if n >= c.gpus and c.gpus
        ]
    if not config.train.activation_checkpointing:
        tries.append(
            (
                "train.activation_checkpointing=true",
                {"train": replace(config.train, activation_checkpointing=True)},
            )
        )
    if c.sharding != "fsdp":
        tries.append(
            (
                "student.lora.enabled=true",
                {"student": replace(config.student, lora=replace(config.student.lora, enabled=True))},
            )
        )
    for change, parts in tries:
        changed = replace(config, **parts)
        batch, _ = batch_split(changed.train, changed.compute.processes)
        if fitting(changed, student_shape(changed.student), batch)[1]:
            return change
    return "nothing tried fits: a smaller student, train.per_device_batch_size or train.max_length"


def plan_cell(overrides: list[str]) -> dict:
    cfg = compose("config", overrides=overrides)
    _, config, strategy = settled(cfg)  # as every cell is: runners/inputs.py
    figures = task_figures(config.task, config.data_dir)
    size = seed_set_size(config.seed_set, figures["pool"], config.task.name)
    shape = student_shape(config.student)
    c, t = config.compute, config.train
    batch, _ = batch_split(t, c.processes)
    memory, fits = fitting(config, shape, batch)
    work = strategy.workload(size, query_budget(config.budget, size), config.budget.count_augmenter)
    per_example = min(tokens_of(figures["train_chars"]), t.max_length)
    sizes = work.tokens or [None] * len(work.stages)
    train_tokens = sum(n * (epochs or t.epochs) * min(tokens or per_example, t.max_length)
                       for (n, epochs), tokens in zip(work.stages, sizes, strict=True))
    test = min(figures["test"], config.eval.limit or figures["test"])
    new_tokens = (
        config.eval.sampling.max_new_tokens
        if config.eval.decoding == "sampled"
        else config.task.max_new_tokens
    )
    scored = sum(work.scored) + test * len(work.stages)
    scoring_tokens = scored * (tokens_of(figures["prompt_chars"]) + new_tokens)
    seconds = gpu_seconds(
        training_flops(shape, train_tokens, t.activation_checkpointing), c.gpu_peak_tflops, c.mfu
    ) + gpu_seconds(generation_flops(shape, scoring_tokens), c.gpu_peak_tflops, c.generation_mfu)
    queries = work.teacher_queries + work.augmenter_queries
    tokens_in = queries * (PROMPT_OVERHEAD + 2 * tokens_of(figures["train_chars"]))
    tokens_out = queries * tokens_of(figures["train_chars"])
    prices = config.teacher.prices or {}
    dollars = (
        tokens_in * prices.get("input_per_mtok", 0) + tokens_out * prices.get("output_per_mtok", 0)
    ) / 1e6 * batch_price_factor(config.teacher.backend)
    return {
        "task": config.task.name,
        "student": config.student.name,
        "draw": (config.seed_set.seed, config.replicate),  # which replicate of its comparison
        "store_dir": config.store_dir,
        "parameters": shape.parameters,
        "seed_set": size,
        "train_tokens": train_tokens,
        "gpus": c.gpus,
        "sharding": str(c.sharding),
        "memory_gib": memory / GIB,
        "gpu_memory_gib": capacity_gb(c),
        "fits": fits,
        "instead": None if fits else what_would_fit(config),
        "gpu_hours": seconds / 3600,  # seconds of the whole node's GPUs = GPU-seconds
        "teacher_queries": queries,
        "teacher_tokens": tokens_in + tokens_out,
        "dollars": dollars,
    }


def plan(overrides: list[str]) -> list[dict]:
    with composer():
        grid = cells(overrides)
        rows = [plan_cell(cell) for cell in grid]
    shared = set.intersection(*(set(cell) for cell in grid)) if len(grid) > 1 else set()
    for row, cell in zip(rows, grid, strict=True):  # a cell is named by what sets it apart
        row["cell"] = (
            " ".join(o for o in cell if o not in shared and not o.startswith("hydra")) or "(one cell)"
        )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'cell':<60} {'params':>7} {'|S|':>6} {'train tok':>10} {'GPUs':>9} {'GiB/GPU':>8} "
        f"{'fits':>4} {'GPU-h':>7} {'queries':>8} {'$':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        gpus = f"{r['gpus']}x{r['sharding'][:4]}"
        lines.append(
            f"{r['cell'][:60]:<60} {r['parameters'] / 1e9:>6.2f}B {r['seed_set']:>6,} "
            f"{r['train_tokens'] / 1e6:>9.1f}M "
            f"{gpus:>9} {r['memory_gib']:>8.1f} {'yes' if r['fits'] else 'NO':>4} {r['gpu_hours']:>7.1f} "
            f"{r['teacher_queries']:>8,} {r['dollars']:>8.2f}"
        )
        if not r["fits"]:
            lines.append(
                f"    needs {r['memory_gib']:.0f} GiB of {r['gpu_memory_gib']:.0f}: would fit with "
                f"{r['instead']}"
            )
    lines.append("-" * len(head))
    unfit = sum(not r["fits"] for r in rows)
    lines.append(
        f"{len(rows)} cells · {sum(r['gpu_hours'] for r in rows):,.1f} GPU-hours · "
        f"{sum(r['train_tokens'] for r in rows) / 1e9:,.2f}B training tokens · "
        f"{sum(r['teacher_queries'] for r in rows):,} teacher queries "
        f"({sum(r['teacher_tokens'] for r in rows) / 1e6:,.1f}M tokens, "
        f"${sum(r['dollars'] for r in rows):,.2f}) · {unfit} cells do not fit"
    )
    return "\n".join(lines)


EFFECTS = (0.05, 0.10)  # differences (accuracy) the power lines report replicates for


def stored_noise(task: str, student: str, stores: list[Path]) -> tuple[float, int] | None:
    """The run-to-run sd of one cell's test accuracy for this task and student, pooled over every recipe
    the stores ran more than once (the report's pooled_noise), and its degrees of freedom."""
    from runners.report.tables import frame, well_formed
    from runners.report.verdicts import pooled_noise

    found = [r for store in stores if store.exists() for r in find_records(store) if well_formed(r)]
    df = frame(list({r["cell_id"]: r for r in found}.values()))
    if df.empty:
        return None
    return pooled_noise(df[(df.task == task) & (df.student == student)])


def power_lines(rows: list[dict], stores: list[Path] | None = None) -> list[str]:
    """Per task and student of the grid: what its replicates can detect, and how many replicates the
    EFFECTS would need, from the noise the stores measured (a paired difference's sd taken as √2 times
    one run's: no credit for pairing, so the counts err on the safe side)."""
    from runners.report.compare import minimum_detectable, replicates_needed

    lines = []
    for task, student in dict.fromkeys((r["task"], r["student"]) for r in rows):
        draws = len({r["draw"] for r in rows if (r["task"], r["student"]) == (task, student)})
        where = stores or [conf_dir().parent / "results", Path(rows[0]["store_dir"])]
        noise = stored_noise(task, student, where)
        if noise is None:
            searched = ", ".join(map(str, where))
            lines.append(f"power: {task} / {student}: no recipe of it ran twice in {searched}; run a pilot "
                         "with replicate=0,1,2 to measure the noise first")
            continue
        sd, dof = noise
        mde = minimum_detectable(math.sqrt(2) * sd, draws)
        needs = ", ".join(f"{100 * e:g} pts needs {replicates_needed(e, math.sqrt(2) * sd) or '> 1000'}"
                          for e in EFFECTS)
        can = (f"its {draws} replicates detect differences of {100 * mde:.1f} pts or more" if mde
               else "one replicate per comparison detects nothing (sweep replicate=0,1,2)")
        lines.append(f"power (80%, 5% two-sided): {task} / {student}: run-to-run sd {sd:.3f} (df {dof}, "
                     f"pooled over the stored recipes); {can}; {needs}")
    return lines


def batch_price_factor(backend: dict) -> float:
    """What a teacher's queries cost of the list price: its batch discount off in batch mode."""
    if backend.get("mode") != "batch":
        return 1.0
    from bench.teachers.openai import BatchSettings

    return 1.0 - BatchSettings.of(backend.get("batch")).discount


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print("usage: python -m runners.plan [config overrides and sweeps, e.g. experiment=llm2llm]\n")
        print(__doc__)
        return 0
    try:
        check_yaml_syntax(argv, CONF)
        rows = plan(argv)
        print(table(rows))
        print("\n".join(power_lines(rows)))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as error:  # an unknown option, a mistyped value
        said = "; ".join(first_line(e)
                         for e in (error, error.__cause__) if e is not None)
        print(f"error: {said} (python run.py --help lists the groups and options)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

