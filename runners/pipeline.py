"""One job, stage by stage: config -> seed set -> training -> evaluation -> record."""

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from bench.config import BenchConfig
from bench.errors import BenchError
from bench.evaluation import evaluate
from bench.seed_set import sample_seed_set
from bench.students import Student, parameter_count
from bench.tasks import load_task
from bench.tracking import Tracker, write_json
from bench.training import finetune


def validated(cfg: DictConfig) -> BenchConfig:
    """The composed config as typed objects; a value left MISSING fails here, before any work."""
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as error:
        key = error.full_key
        group = key.split(".")[0]
        raise BenchError(f"{key} is required but not set: add it to the {group} YAML in conf/{group}/ "
                         f"or pass {key}=... on the command line") from None


def run(cfg: DictConfig, run_dir: Path) -> dict:
    config = validated(cfg)
    data_dir = str(Path(config.data_dir).resolve()) if config.data_dir else None
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = time.perf_counter()

    # Stage 1: the task's data and the seed set S (test examples can never be drawn).
    data = load_task(config.task, data_dir)
    seed_set = sample_seed_set(data.train, config.seed_set, config.task.name)
    write_json(run_dir / "seed_ids.json", [example.id for example in seed_set])

    tracker = Tracker(run_dir, config.logger, OmegaConf.to_container(cfg, resolve=True),
                      name=f"{config.task.name}-{config.student.name}-s{len(seed_set)}")
    failed = True
    try:
        tracker.log({"data/source": data.source, "data/train_pool": len(data.train),
                     "data/seed_set": len(seed_set), "data/dropped_test_overlap": data.dropped_test_overlap,
                     "test/majority_rate": data.majority_rate})

        # Stage 2: the student, trained from its base weights on S.
        student = Student(config.student, (f"{e.prompt} {e.target}" for e in data.train))
        model = student.base_model()
        model, stats = finetune(model, student.tokenizer, seed_set, config.train, run_dir / "trainer",
                                tracker.report_to)
        tracker.log({"student/parameters": parameter_count(model), "train/loss": stats.train_loss,
                     "train/steps": stats.steps, "train/seconds": stats.seconds,
                     "train/tokens_per_second": stats.tokens_per_second,
                     "train/padding_share": stats.padding_share})

        # Stage 3: test accuracy through lm-evaluation-harness, per example.
        result = evaluate(model, student.tokenizer, config.task, "test", data.test, config.eval, run_dir)
        tracker.log_predictions("test", result.records)
        tracker.log({"test/acc": result.accuracy, "test/acc_stderr": result.stderr,
                     "test/examples": len(result.records), "job/seconds": time.perf_counter() - started})
        failed = False
    finally:
        tracker.finish(failed)
    print(summary(config, data, seed_set, stats, result, tracker.metrics, run_dir))
    return tracker.metrics


def summary(config: BenchConfig, data, seed_set, stats, result, metrics: dict, run_dir: Path) -> str:
    rows = [
        ("task", f"{config.task.name} ({data.source}), train pool {len(data.train):,}"),
        ("student", f"{config.student.name}, {metrics['student/parameters'] / 1e6:.1f}M parameters"),
        ("seed set", f"{len(seed_set):,} examples"),
        ("training", (f"{stats.steps} steps in {stats.seconds:.0f} s, {stats.tokens_per_second:,.0f} tokens/s, "
                      f"{stats.padding_share:.0%} padding, final loss {stats.train_loss:.3f}")),
        ("test accuracy", (f"{result.accuracy:.3f} ± {result.stderr:.3f} on {len(result.records)} examples "
                           f"(majority class {data.majority_rate:.3f})")),
        ("wall time", f"{metrics['job/seconds']:.0f} s"),
        ("run record", str(run_dir)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
