"""Training stages: train the student from the base weights (or an earlier stage) and score it through
lm-eval. Each stage is content-addressed (bench/store.py): a stage some earlier job already computed is
reused, and a stage another cell of the sweep is computing is waited for. Over several processes rank 0
drives and sends each stage to the other ranks, which `follow`: each trains and scores its shard."""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import interrupts
from bench.config import BenchConfig, TrainConfig
from bench.distributed import Ranks, cpu_threads_in_use
from bench.errors import BenchError
from bench.evaluation import (
    FEW_STEPS,
    MOSTLY_INVALID,
    EvalResult,
    LikelihoodResult,
    decoding_of,
    evaluate,
    likelihood,
    save_for_scoring,
    write_lm_eval_task,
)
from bench.store import STAGE_FORMAT, StageStore, code_version, digest, reusable
from bench.students import Student, parameter_count
from bench.tasks import TaskData
from bench.tracking import Tracker
from bench.training import TrainStats, finetune

log = logging.getLogger(__name__)
NEUTRAL_ADDITIONS = {"average_weights": 0.0}


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
    likelihood: LikelihoodResult | None = None  # the test split by log-likelihood (eval.likelihood)

    @property
    def wrong_ids(self) -> set:
        return set(self.scored.wrong_ids) if self.scored else set()

    def stored(self) -> dict:
        return {"stats": vars(self.stats), "test": vars(self.test),
                "scored": vars(self.scored) if self.scored else None,
                "greedy": vars(self.greedy) if self.greedy else None,
                "likelihood": vars(self.likelihood) if self.likelihood else None,
                "parameters": self.parameters, "code": code_version()}

    @classmethod
    def of_stored(cls, iteration: int, key: str, done: dict) -> "Round":
        return cls(iteration, key, TrainStats(**done["stats"]), EvalResult(**done["test"]),
                   EvalResult(**done["scored"]) if done["scored"] else None, done["parameters"], reused=True,
                   greedy=EvalResult(**done["greedy"]) if done.get("greedy") else None,
                   likelihood=LikelihoodResult(**done["likelihood"]) if done.get("likelihood") else None)


def examples_digest(examples) -> str:
    return digest([(e.id, e.prompt, e.target) for e in examples])


class StageRunner:
    def __init__(self, config: BenchConfig, run_dir: Path, task: TaskData, student: Student, tracker: Tracker,
                 ranks: Ranks):
        self.config, self.run_dir, self.task, self.student, self.tracker, self.ranks = (
            config, run_dir, task, student, tracker, ranks)
        self.stages = StageStore(Path(config.store_dir), config.cache_url, config.cache_outage_s)
        self.kept: dict = {}  # a follower's trained weights that a later stage continues from

    def key(self, examples: list, start_from: Round | None, score_on: list, recipe: TrainConfig) -> str:
        c = self.config
        # student.save says what is kept of a stage, not what it trains
        student = {k: v for k, v in asdict(c.student).items() if k != "save"}
        # a recipe setting added since STAGE_FORMAT, at the value that trains as before, leaves the key as
        # it was: stored stages stay valid
        train = {k: v for k, v in asdict(recipe).items()
                 if not (k in NEUTRAL_ADDITIONS and v == NEUTRAL_ADDITIONS[k])}
        return digest({"format": STAGE_FORMAT, "task": asdict(c.task), "data": self.task.digest,
                       "student": student, "train": train, "eval": asdict(c.eval),
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

    def run(self, examples: list, iteration: int, label: str, start_from: Round | None, score_on: list,
            keep_weights: bool, recipe: TrainConfig) -> Round:
        """The stage: reused from the store, or trained and scored here (and on the followers) and stored;
        `keep_weights` stores its weights too, for a later stage that continues from them."""
        interrupts.raise_if_stopped()  # a stop a finalizer swallowed: before the next stage, not after it
        key = self.key(examples, start_from, score_on, recipe)
        with self.stages.claim(key):  # another cell of the sweep may be computing this very stage
            # resume=false computes every stage again, as it does every cell (the answers stay cached)
            done = self.stages.load(key, need_weights=keep_weights) if self.config.resume != "false" else None
            if done is not None and reusable(f"stage {key}", done.get("code"), self.config.resume):
                log.info(f"{label}reusing the stage an earlier job trained on these {len(examples):,} "
                         f"examples ({key[:12]})")
                return Round.of_stored(iteration, key, done)
            log.info(f"{label}training on {len(examples):,} examples ({recipe.epochs:g} epochs) …")
            with self.ranks.stage():  # the followers train and score it too
                self.ranks.send((examples, iteration, key, start_from and start_from.key, score_on,
                                 recipe, keep_weights))
                start = self.model_of(start_from) if start_from is not None else None
                stage = self.compute(examples, iteration, key, start, score_on, recipe, label)
            self.stages.save(key, stage.stored(), stage.model if keep_weights else None)
            if not keep_weights:
                stage.model = None  # no later stage starts from it: free the memory
            return stage

    def follow(self) -> None:
        """A follower rank: compute each stage rank 0 sends, until it sends the end of the cell."""
        while (command := self.ranks.send(None)) is not None:
            examples, iteration, key, start_key, score_on, recipe, keep_weights = command
            start = start_key and (self.kept.pop(start_key, None) or self.stored_model(start_key))
            stage = self.compute(examples, iteration, key, start, score_on, recipe)
            if keep_weights:
                self.kept[key] = stage.model

    def compute(self, examples: list, iteration: int, key: str, start, score_on: list, recipe: TrainConfig,
                label: str = "") -> Round:
        """Train (from the model `start`, or the base weights) and score: on every rank when there are
        several, each scoring its shard; the scores are whole on rank 0 only."""
        where = self.run_dir / f"iteration_{iteration}"
        model = start if start is not None else self.student.base_model()
        model, stats = finetune(model, self.student.tokenizer, examples, recipe, where / "trainer",
                                self.tracker.curve(iteration, label), self.config.compute.sharding)
        if stats.steps == 0:  # a stage that learned nothing is never stored as a result
            raise BenchError(
                f"training on {len(examples)} examples ran 0 optimizer steps (train.epochs="
                f"{recipe.epochs:g}, effective batch {recipe.effective_batch_size}): raise "
                "train.epochs, or lower train.effective_batch_size"
            )
        scored = self.score(model, "train", score_on, where, label) if score_on else None
        tests = self.task.test[: self.config.eval.limit]
        test = self.score(model, "test", tests, where, label)
        sampled = decoding_of(self.config.task, self.config.eval) != "greedy"
        greedy = self.score(model, "test_greedy", tests, where, label, "greedy") \
            if sampled and self.config.eval.greedy_column else None
        by_likelihood = likelihood(model, self.student.tokenizer, self.config.task, tests, self.config.eval,
                                   where, self.ranks) if self.config.eval.likelihood else None
        if self.ranks.main and not test.records:
            raise BenchError(
                f"scoring {self.config.task.name}'s test split covered 0 examples; check the "
                "test split and eval.limit"
            )
        return Round(iteration, key, stats, test, scored, parameter_count(model), reused=False, model=model,
                     greedy=greedy, likelihood=by_likelihood)

    def score(self, model, split: str, examples: list, where: Path, label: str, decoding: str | None = None
              ) -> EvalResult | None:
        """lm-eval's scores of `examples`; over several ranks each scores a shard, rank 0 has them all."""
        config = self.config
        if self.ranks.main:
            log.info(f"{label}scoring {split.replace('_', ' ')} ({len(examples):,} examples) …")
        return evaluate(model, self.student.tokenizer, config.task, split, examples, config.eval, where,
                        self.ranks, decoding)

    def save_final(self, final: Round) -> str:
        """student.save=final: the last stage's weights as an HF folder (`model/`) and its test scoring as
        a self-contained lm-eval task folder (`lm_eval_tasks/`); return the plain lm-eval command that
        scores it again."""
        config, model = self.config, self.model_of(final)
        save_for_scoring(model.merge_and_unload() if hasattr(model, "merge_and_unload") else model,
                         self.student.tokenizer, self.run_dir / "model")
        name = write_lm_eval_task(config.task, "test", self.task.test[: config.eval.limit], config.eval,
                                  self.run_dir / "lm_eval_tasks")
        command = (f"lm_eval --model hf --model_args pretrained={self.run_dir / 'model'} --include_path "
                   f"{self.run_dir / 'lm_eval_tasks'} --tasks {name} --batch_size {config.eval.batch_size}")
        log.info(f"saved the final weights in {self.run_dir / 'model'}; plain lm-eval scores them: {command}")
        return command


def warn_if_doubtful(stage: Round, recipe: TrainConfig, label: str) -> None:
    """A stage that barely trained, or whose generations are mostly no answer, says so with the fix."""
    stats, test = stage.stats, stage.test
    if stats.steps < FEW_STEPS:
        log.warning(f"{label}training took only {stats.steps} optimizer step(s) ({stats.examples:,} "
                    f"examples, {recipe.epochs:g} epochs, effective batch {recipe.effective_batch_size}): "
                    "a pretrained student barely moves; raise train.epochs or lower "
                    "train.effective_batch_size (train=small_lm for a small LM on ~100 examples)")
    if test.invalid_share > MOSTLY_INVALID:
        invalid = [r["generation"] for r in test.records if not r["valid"]]
        log.warning(f"{label}{len(invalid):,} of {len(test.records):,} test generations are no "
                    f"answer at all (first: {', '.join(repr(g[:40]) for g in invalid[:3])}): the score "
                    "measures the output format; train longer, or check task.cue and the labels")
