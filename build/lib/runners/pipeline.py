"""One job, stage by stage: config -> seed set -> generation -> training -> evaluation -> record.
The strategy drives the rounds (generate, then train and score); the Job below is what it drives."""

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from bench.config import BenchConfig
from bench.errors import BenchError
from bench.evaluation import EvalResult, evaluate
from bench.seed_set import sample_seed_set
from bench.students import Student, parameter_count
from bench.tasks import load_task
from bench.teachers import build_teachers
from bench.tracking import Tracker, write_json, write_jsonl
from bench.training import TrainStats, finetune


def validated(cfg: DictConfig) -> BenchConfig:
    """The composed config as typed objects; a value left MISSING fails here, before any work."""
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as error:
        key = error.full_key
        group = key.split(".")[0]
        raise BenchError(f"{key} is required but not set: add it to the {group} YAML in conf/{group}/ "
                         f"or pass {key}=... on the command line") from None


def build_strategy(cfg: DictConfig):
    try:
        return instantiate(cfg.strategy, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, BenchError):
            raise error.__cause__ from None
        raise BenchError(f"strategy: {str(error).splitlines()[-1]} (check the keys in conf/strategy/)") from None


@dataclass
class Round:
    iteration: int
    model: object
    stats: TrainStats
    test: EvalResult
    scored: EvalResult | None  # the training examples the strategy asked to score (LLM2LLM: the seed set)

    @property
    def wrong_ids(self) -> set:
        return set(self.scored.wrong_ids) if self.scored else set()


class Job:
    def __init__(self, config: BenchConfig, run_dir: Path, data, seed_set: list, tracker: Tracker):
        self.config, self.run_dir, self.task, self.seed_set, self.tracker = config, run_dir, data, seed_set, tracker
        self.student = Student(config.student, (f"{e.prompt} {e.target}" for e in data.train))
        self.rounds: list = []
        self.generated: dict = {}  # iteration -> counts of what happened to its requests

    @cached_property
    def _teachers(self) -> tuple:
        return build_teachers(self.config, self.task, [e.id for e in self.seed_set])

    @property
    def teacher(self):
        return self._teachers[0]

    @property
    def augmenter(self):
        return self._teachers[1]

    def teachers_used(self) -> tuple:
        """The teacher objects, if the strategy asked for any (they are built on first use)."""
        return self._teachers if "_teachers" in self.__dict__ else ()

    def train_and_score(self, examples: list, iteration: int, start_from=None, score_on: list = ()) -> Round:
        """Train from the base weights (or `start_from`) on `examples`, score the test split and, when
        asked, `score_on` (training examples, through the same lm-eval path)."""
        where = self.run_dir / f"iteration_{iteration}"
        model = start_from if start_from is not None else self.student.base_model()
        model, stats = finetune(model, self.student.tokenizer, examples, self.config.train, where / "trainer",
                                self.tracker.report_to)
        tokenizer, task, cfg = self.student.tokenizer, self.config.task, self.config.eval
        scored = evaluate(model, tokenizer, task, "train", list(score_on), cfg, where) if score_on else None
        test = evaluate(model, tokenizer, task, "test", self.task.test, cfg, where, limit=cfg.limit)
        self.tracker.log_predictions(f"iteration_{iteration}/test", test.records)
        if scored:
            self.tracker.log_predictions(f"iteration_{iteration}/train", scored.records)
        self.tracker.log({"iteration": iteration, "test/acc": test.accuracy, "test/acc_stderr": test.stderr,
                          "test/examples": len(test.records), "train/examples": len(examples),
                          "train/loss": stats.train_loss, "train/seconds": stats.seconds,
                          "train/tokens_per_second": stats.tokens_per_second,
                          "train/padding_share": stats.padding_share,
                          **({"train/scored_acc": scored.accuracy} if scored else {})})
        self.rounds.append(Round(iteration, model, stats, test, scored))
        write_json(self.run_dir / "iterations.json", [self.round_summary(r) for r in self.rounds])
        return self.rounds[-1]

    def add_generated(self, iteration: int, generated: list, tally) -> None:
        """Save a round's generated examples (JSONL, loadable with `datasets`) and what was dropped."""
        write_jsonl(self.run_dir / "generated" / f"iteration_{iteration}.jsonl", (g.record() for g in generated))
        self.generated[iteration] = dict(tally.counts)
        self.tracker.log({f"generation/{name}": n for name, n in tally.counts.items()})
        self.tracker.log_table(f"generated/iteration_{iteration}", [g.record() for g in generated])

    def round_summary(self, r: Round) -> dict:
        return {"iteration": r.iteration, "train_examples": r.stats.examples, "test_acc": r.test.accuracy,
                "test_acc_stderr": r.test.stderr, "scored_acc": r.scored.accuracy if r.scored else None,
                "generation": self.generated.get(r.iteration, {})}  # what was added before this round


def run(cfg: DictConfig, run_dir: Path) -> dict:
    config = validated(cfg)
    if config.data_dir:
        config.data_dir = str(Path(config.data_dir).resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = time.perf_counter()

    # Stage 1: the task's data and the seed set S (test examples can never be drawn).
    data = load_task(config.task, config.data_dir)
    seed_set = sample_seed_set(data.train, config.seed_set, config.task.name)
    write_json(run_dir / "seed_ids.json", [example.id for example in seed_set])
    strategy = build_strategy(cfg)

    tracker = Tracker(run_dir, config.logger, OmegaConf.to_container(cfg, resolve=True),
                      name=f"{config.task.name}-{strategy.name}-{config.student.name}-s{len(seed_set)}")
    failed = True
    try:
        tracker.log({"data/source": data.source, "data/train_pool": len(data.train),
                     "data/seed_set": len(seed_set), "data/dropped_test_overlap": data.dropped_test_overlap,
                     "test/majority_rate": data.majority_rate})
        # Stages 2-4, as the strategy drives them: generation, training from the base weights, scoring.
        job = Job(config, run_dir, data, seed_set, tracker)
        strategy.run(job)
        usage = tracker.log_teachers(*job.teachers_used()) if job.teachers_used() else {}
        final = job.rounds[-1]
        tracker.log({"student/parameters": parameter_count(final.model), "final/test_acc": final.test.accuracy,
                     "final/test_acc_stderr": final.test.stderr, "job/seconds": time.perf_counter() - started})
        failed = False
    finally:
        tracker.finish(failed)
    print(summary(config, strategy.name, data, seed_set, job, usage, tracker.metrics, run_dir))
    return tracker.metrics


def summary(config: BenchConfig, strategy: str, data, seed_set, job: Job, usage: dict, metrics: dict,
            run_dir: Path) -> str:
    head = [
        ("task", (f"{config.task.name} ({data.source}), train pool {len(data.train):,}, "
                  f"majority class {data.majority_rate:.3f}")),
        ("student", f"{config.student.name}, {metrics['student/parameters'] / 1e6:.1f}M parameters"),
        ("strategy", f"{strategy}, seed set {len(seed_set):,} examples"),
    ]
    width = max(len(name) for name, _ in head)
    lines = [f"{name:<{width}}  {value}" for name, value in head]
    lines.append("\niteration  train examples  added  test accuracy     train s")
    for r in job.rounds:
        added = job.generated.get(r.iteration, {}).get("added", 0)
        lines.append(f"{r.iteration:>9}  {r.stats.examples:>14,}  {added:>5}  "
                     f"{r.test.accuracy:.3f} ± {r.test.stderr:.3f}  {r.stats.seconds:>7.0f}")
    for role, line in usage.items():
        if role != "budget":
            lines.append(f"{role}: {line['requests']} queries, {line['cache_hits']} from the cache, "
                         f"{line['failed']} failed, {line['over_budget']} over budget, "
                         f"{line['prompt_tokens'] + line['completion_tokens']:,} tokens, ${line['cost_usd']:.4f}")
    lines.append(f"\nwall time {metrics['job/seconds']:.0f} s · run record {run_dir}")
    return "\n".join(lines)
