"""One job, stage by stage: config -> seed set -> generation -> training -> evaluation -> record.
The strategy drives the rounds (generate, then train and score); the Job below is what it drives.
A trained-and-scored stage is content-addressed (bench/store.py): a job that needs one some earlier job
already computed reuses it instead of training again."""

import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from bench.config import BenchConfig, TrainConfig
from bench.errors import BenchError
from bench.evaluation import EvalResult, evaluate, zero_shot
from bench.seed_set import sample_seed_set
from bench.store import STAGE_FORMAT, StageStore, digest, write_json, write_jsonl
from bench.students import Student, parameter_count
from bench.tasks import load_task
from bench.teachers import build_teachers
from bench.tracking import Tracker
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
    key: str  # the stage's content address
    stats: TrainStats
    test: EvalResult
    scored: EvalResult | None  # the training examples the strategy asked to score (LLM2LLM: the seed set)
    parameters: int
    reused: bool  # computed by an earlier job, not trained here
    model: object = None  # in memory when trained here; else loaded from the stage store on demand

    @property
    def wrong_ids(self) -> set:
        return set(self.scored.wrong_ids) if self.scored else set()


def examples_digest(examples) -> str:
    return digest([(e.id, e.prompt, e.target) for e in examples])


class Job:
    def __init__(self, config: BenchConfig, run_dir: Path, data, seed_set: list, tracker: Tracker):
        self.config, self.run_dir, self.task, self.seed_set, self.tracker = config, run_dir, data, seed_set, tracker
        self.student = Student(config.student, (f"{e.prompt} {e.target}" for e in data.train))
        self.stages = StageStore(Path(config.store_dir))
        self.rounds: list = []
        self.generated: dict = {}  # iteration -> counts of what happened to its requests
        self.generated_examples: dict = {}  # iteration -> the examples it added

    @cached_property
    def _teachers(self) -> tuple:
        return build_teachers(self.config, self.task, [e.id for e in self.seed_set])

    @property
    def teacher(self):
        return self._teachers[0]

    @property
    def augmenter(self):
        return self._teachers[1]

    def stage_key(self, examples: list, start_from: Round | None, score_on: list, recipe: TrainConfig) -> str:
        c = self.config
        return digest({"format": STAGE_FORMAT, "task": asdict(c.task), "student": asdict(c.student),
                       "train": asdict(recipe), "eval": asdict(c.eval), "examples": examples_digest(examples),
                       "start_from": start_from.key if start_from else "base",
                       "score_on": examples_digest(score_on)})

    def model_of(self, stage: Round):
        """A stage's trained weights: in memory, or loaded from the stage store."""
        if stage.model is None:
            from safetensors.torch import load_model

            stage.model = self.student.base_model()
            load_model(stage.model, str(self.stages.weights(stage.key)))
        return stage.model

    def train_and_score(self, examples: list, iteration: int, start_from: Round | None = None,
                        score_on: list = (), keep_weights: bool = False, recipe: TrainConfig | None = None) -> Round:
        """Train from the base weights (or the stage `start_from`) on `examples`, score the test split
        and, when asked, `score_on` (training examples, through the same lm-eval path). `keep_weights`
        stores the trained weights too, for a later stage that continues from them; `recipe` replaces
        the train config (a pre-training stage)."""
        score_on, recipe = list(score_on), recipe or self.config.train
        key = self.stage_key(examples, start_from, score_on, recipe)
        with self.stages.claim(key):  # another cell of the sweep may be computing this very stage
            done = self.stages.load(key, need_weights=keep_weights)
            if done is not None:
                stage = Round(iteration, key, TrainStats(**done["stats"]), EvalResult(**done["test"]),
                              EvalResult(**done["scored"]) if done["scored"] else None, done["parameters"],
                              reused=True)
            else:
                stage = self.compute(examples, iteration, key, start_from, score_on, recipe)
                self.stages.save(key, {"stats": vars(stage.stats), "test": vars(stage.test),
                                       "scored": vars(stage.scored) if stage.scored else None,
                                       "parameters": stage.parameters},
                                 stage.model if keep_weights else None)
                if not keep_weights:
                    stage.model = None  # no later stage starts from it: free the memory
        test, scored, stats = stage.test, stage.scored, stage.stats
        self.tracker.log_predictions(f"iteration_{iteration}/test", test.records)
        if scored:
            self.tracker.log_predictions(f"iteration_{iteration}/train", scored.records)
        self.tracker.log({"iteration": iteration, "test/acc": test.accuracy, "test/acc_stderr": test.stderr,
                          "test/examples": len(test.records), "train/examples": len(examples),
                          "train/loss": stats.train_loss, "train/seconds": stats.seconds,
                          "train/tokens_per_second": stats.tokens_per_second,
                          "train/padding_share": stats.padding_share, "stage/reused": int(stage.reused),
                          **({"train/scored_acc": scored.accuracy} if scored else {})})
        self.rounds.append(stage)
        write_json(self.run_dir / "iterations.json", [self.round_summary(r) for r in self.rounds])
        return stage

    def compute(self, examples: list, iteration: int, key: str, start_from: Round | None,
                score_on: list, recipe: TrainConfig) -> Round:
        where = self.run_dir / f"iteration_{iteration}"
        model = self.model_of(start_from) if start_from is not None else self.student.base_model()
        model, stats = finetune(model, self.student.tokenizer, examples, recipe, where / "trainer",
                                self.tracker.report_to)
        tokenizer, task, cfg = self.student.tokenizer, self.config.task, self.config.eval
        scored = evaluate(model, tokenizer, task, "train", score_on, cfg, where) if score_on else None
        test = evaluate(model, tokenizer, task, "test", self.task.test, cfg, where, limit=cfg.limit)
        return Round(iteration, key, stats, test, scored, parameter_count(model), reused=False, model=model)

    def zero_shot(self, stage: Round, tasks: list, include_path: str | None, limit: int | None) -> dict:
        """lm-eval's own tasks (ARC, BoolQ, ...) on a stage's model, zero-shot; logged per iteration."""
        scores = zero_shot(self.model_of(stage), self.student.tokenizer, tasks, include_path,
                           self.config.eval.batch_size, limit)
        self.tracker.log({f"zero_shot/iteration_{stage.iteration}/{task}/{metric}": value
                          for task, metrics in scores.items() for metric, value in metrics.items()})
        return scores

    def add_generated(self, iteration: int, generated: list, tally) -> None:
        """Save a round's generated examples (JSONL, loadable with `datasets`) and what was dropped."""
        write_jsonl(self.run_dir / "generated" / f"iteration_{iteration}.jsonl", (g.record() for g in generated))
        self.generated[iteration] = dict(tally.counts)
        self.generated_examples[iteration] = [g.example for g in generated]
        self.tracker.log({f"generation/{name}": n for name, n in tally.counts.items()})
        self.tracker.log_table(f"generated/iteration_{iteration}", [g.record() for g in generated])

    def generated_datasets(self) -> dict:
        """Each round's generated examples and, over several rounds, all of them together."""
        rounds = {f"generated/iteration_{k}": v for k, v in sorted(self.generated_examples.items()) if v}
        if len(rounds) <= 1:
            return {"generated/all": next(iter(rounds.values()))} if rounds else {}
        return {**rounds, "generated/all": [e for v in rounds.values() for e in v]}

    def score_diversity(self) -> dict:
        """Diversity scores of every generated dataset (baselines; the cluster agent when enabled)."""
        cfg = self.config.diversity
        datasets = {name: examples for name, examples in self.generated_datasets().items() if len(examples) > 1}
        if not cfg.enabled or not datasets:
            return {}
        from bench.diversity import score_dataset
        from bench.diversity.cluster_agent import ClusterAgent

        agent = ClusterAgent(cfg.cluster_agent, self.cluster_teacher) if cfg.cluster_agent.enabled else None
        scores = {}
        for name, examples in datasets.items():
            scores[name] = score_dataset(examples, cfg, agent)
            self.tracker.log({f"diversity/{name}/{metric}": value for metric, value in scores[name].items()
                              if isinstance(value, int | float)})
        return scores

    @cached_property
    def cluster_teacher(self):
        """The cluster agent's LLM: its own budget (diversity.cluster_agent.max_queries), the shared cache."""
        from bench.teachers import Budget, GenerationCache, build_backend, make_teacher

        agent = self.config.diversity.cluster_agent
        cfg = agent.teacher or self.config.teacher
        backend = self.teacher.backend if agent.teacher is None else \
            build_backend(cfg, self.task, {e.id for e in self.seed_set})
        return make_teacher(cfg, backend, GenerationCache(self.config.cache_path), Budget(agent.max_queries))

    def teachers_used(self) -> tuple:
        """The teacher objects, if the job asked for any (they are built on first use)."""
        built = self._teachers if "_teachers" in self.__dict__ else ()
        return (*built, self.cluster_teacher) if "cluster_teacher" in self.__dict__ else built

    def round_summary(self, r: Round) -> dict:
        return {"iteration": r.iteration, "train_examples": r.stats.examples, "test_acc": r.test.accuracy,
                "test_acc_stderr": r.test.stderr, "scored_acc": r.scored.accuracy if r.scored else None,
                "train_seconds": r.stats.seconds, "stage": r.key, "reused": r.reused,
                "generation": self.generated.get(r.iteration, {})}  # what was added before this round


def run(cfg: DictConfig, run_dir: Path, sweep: str | None = None) -> dict:
    """Run one job; return its record (config, metrics, iterations, cost, stages, timings)."""
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
                      name=f"{config.task.name}-{strategy.name}-{config.student.name}-s{len(seed_set)}",
                      group=sweep, tags=(config.task.name, strategy.name, config.student.name))
    failed = True
    try:
        tracker.log({"data/source": data.source, "data/train_pool": len(data.train),
                     "data/seed_set": len(seed_set), "data/dropped_test_overlap": data.dropped_test_overlap,
                     "test/majority_rate": data.majority_rate})
        # Stages 2-4, as the strategy drives them: generation, training from the base weights, scoring.
        job = Job(config, run_dir, data, seed_set, tracker)
        strategy.run(job)
        diversity = job.score_diversity()
        usage = tracker.log_teachers(*job.teachers_used()) if job.teachers_used() else {}
        final = job.rounds[-1]
        trained = sum(not r.reused for r in job.rounds)
        tracker.log({"student/parameters": final.parameters, "final/test_acc": final.test.accuracy,
                     "final/test_acc_stderr": final.test.stderr, "stages/trained": trained,
                     "stages/reused": len(job.rounds) - trained, "job/seconds": time.perf_counter() - started})
        failed = False
    finally:
        tracker.finish(failed)
    print(summary(config, strategy.name, data, seed_set, job, usage, tracker.metrics, run_dir))
    return {"strategy": strategy.name, "seed_set_size": len(seed_set), "metrics": tracker.metrics,
            "iterations": [job.round_summary(r) for r in job.rounds], "cost": usage, "diversity": diversity,
            "stages": {"trained": trained, "reused": len(job.rounds) - trained,
                       "keys": [r.key for r in job.rounds]}}


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
                     f"{r.test.accuracy:.3f} ± {r.test.stderr:.3f}  {r.stats.seconds:>7.0f}"
                     + ("  (reused: trained by an earlier job)" if r.reused else ""))
    for role, line in usage.items():
        if role != "budget":
            lines.append(f"{role}: {line['requests']} queries, {line['cache_hits']} from the cache, "
                         f"{line['failed']} failed, {line['over_budget']} over budget, "
                         f"{line['prompt_tokens'] + line['completion_tokens']:,} tokens, ${line['cost_usd']:.4f}")
    lines.append(f"\nwall time {metrics['job/seconds']:.0f} s · run record {run_dir}")
    return "\n".join(lines)
