"""LLM2LLM (Lee et al. 2024; docs/protocols.md §1): iteration 0 fine-tunes on the seed set; then, each
round, the seed examples the student gets wrong (from lm-eval's per-example results on the seed set) each get
`per_wrong` new examples written by the teacher, which sees the seed question and its gold answer; the
cumulative set is retrained from the base weights.

As the authors' GSM8K/generate_data.py: a new question more ROUGE-L-similar than 0.95 to this round's wrong
seed questions or to a question generated earlier in the round is dropped, and its request is asked again
(a fresh sample) until each wrong example has its example or `retries` more attempts are spent."""

import logging
from dataclasses import dataclass, field, replace
from enum import StrEnum

from bench.config import FiltersConfig, at_least
from bench.errors import BenchError
from bench.steps import NEW_EXAMPLE
from bench.strategies.base import (
    Generated,
    Reply,
    Strategy,
    StrategyJob,
    Tally,
    Workload,
    make_example,
    source_fields,
    writer,
)

RETRY_STRIDE = 1_000_000  # retry a of a request asks for sample index + a x this: a fresh, cached sample
log = logging.getLogger(__name__)


class NearDuplicatesOf(StrEnum):
    round = "round"  # this round's wrong seed questions and generated ones (the LLM2LLM authors')
    training = "training"  # the whole training set


@dataclass(kw_only=True)
class LLM2LLM(Strategy):
    name = "llm2llm"
    family = "llm2llm"
    iterative = True
    report_table = ("llm2llm", "LLM2LLM: test accuracy, fine-tuning vs LLM2LLM (final iteration)")

    iterations: int = 10  # including iteration 0, the fine-tuning baseline (9 augmentation rounds)
    per_wrong: int = 1  # new examples per wrong seed example (instructions_per_seed_task)
    # the paper's ablations
    continue_training: bool = False  # fine-tune the previous iteration's model instead of the base weights
    augment_synthetic: bool = False  # wrong synthetic examples are augmented too, not only seed examples
    one_shot: bool = False  # a single augmentation round of `one_shot_examples` examples, no iterations
    # one_shot: how many; null: as many as the paired iterative cell generated (the paper's equal data)
    one_shot_examples: int | None = None
    retries: int = 4  # a dropped request (no reply, unparsable, filtered) is asked again up to 4 times
    near_duplicates_of: NearDuplicatesOf = NearDuplicatesOf.round
    filters: FiltersConfig = field(default_factory=lambda: FiltersConfig(near_duplicate_rouge_l=0.95,
                                                                         decontaminate_ngram=13))

    def check(self) -> None:
        super().check()
        at_least("strategy.iterations", self.iterations, 1)
        at_least("strategy.per_wrong", self.per_wrong, 1)
        at_least("strategy.one_shot_examples", self.one_shot_examples, 1, optional=True)
        at_least("strategy.retries", self.retries, 0)

    def run(self, job: StrategyJob) -> None:
        seed = list(job.seed_set)
        self.choose_worked_example(seed)
        training, synthetic = list(seed), []
        filters = self.question_filters(job.task, training)
        rounds = 2 if self.one_shot else self.iterations
        previous = None
        for iteration in range(rounds):
            last = iteration == rounds - 1
            # only seed examples are augmented, unless the ablation says synthetic ones too
            scored = [] if last else seed + (synthetic if self.augment_synthetic else [])
            result = job.train_and_score(training, iteration, start_from=previous, score_on=scored,
                                         keep_weights=self.continue_training and not last)
            previous = result if self.continue_training else None
            if last:
                break
            wrong = [example for example in scored if example.id in result.wrong_ids]
            if self.one_shot:  # all the data in one round, cycling over the wrong examples
                total = self.one_shot_examples or self.iterative_total(job)
                sources = [(wrong[i % len(wrong)], i // len(wrong)) for i in range(total)] if wrong else []
            else:
                sources = [(example, iteration * self.per_wrong + k) for example in wrong
                           for k in range(self.per_wrong)]
            if self.near_duplicates_of == "round":  # the authors' pool: this round's wrong seed questions
                filters = self.question_filters(job.task, wrong)
            added = self.augment(job, sources, iteration + 1, filters)
            if not added and not self.continue_training:
                # the same data from the same base weights: every later round would repeat this one
                log.info(f"nothing added ({len(wrong)} scored examples wrong): stopping after iteration "
                         f"{iteration}")
                break
            synthetic += [g.example for g in added]
            training += [g.example for g in added]

    def iterative_total(self, job: StrategyJob) -> int:
        """The paper's "equal data": as many examples as the iterative cell of these settings (no
        ablation) generated in all its rounds, a finished cell of the results store."""
        iterative = replace(self, one_shot=False, one_shot_examples=None, continue_training=False,
                            augment_synthetic=False)
        paired = job.finished_cell(iterative)
        if paired is None:
            raise BenchError("the one-shot ablation pairs with its iterative cell (strategy=llm2llm, "
                             f"iterations={self.iterations}, per_wrong={self.per_wrong}, its other "
                             "settings alike, the same task, seed set, student, teacher and recipe) and "
                             "found none finished in the results store: run that cell first "
                             "(experiment=llm2llm_ablations lists it first), or set "
                             "strategy.one_shot_examples=N")
        return paired.added

    def workload(self, seed_size: int, max_queries: int | None, count_augmenter: bool) -> Workload:
        """As `run`, with every scored example wrong in every round and every request retried to the cap
        (the bound; real rounds ask for less)."""
        rounds = 2 if self.one_shot else self.iterations
        stages, scored, queries, synthetic = [], [], 0, 0
        for iteration in range(rounds):
            stages.append((seed_size + synthetic, None))
            if iteration == rounds - 1:
                scored.append(0)
                break
            scored.append(seed_size + (synthetic if self.augment_synthetic else 0))
            if self.one_shot:
                new = self.one_shot_examples or (self.iterations - 1) * self.per_wrong * seed_size
            else:
                new = scored[-1] * self.per_wrong
            queries, synthetic = queries + new, synthetic + new
        return Workload(stages, scored, teacher_queries=queries * (1 + self.retries))  # every retry spent

    def augment(self, job: StrategyJob, sources: list, iteration: int, filters) -> list:
        """One new example per (source, sample index): the sample index grows with the round, so a seed
        example still wrong later gets a fresh sample rather than its cached earlier one. A request whose
        reply is missing, does not parse or is filtered out is asked again, up to `retries` times."""
        task, teacher, tally = job.task, job.teacher, Tally()
        tally.add("requested", len(sources))
        kept, pending = {}, list(range(len(sources)))
        for attempt in range(1 + self.retries):
            budget = job.budget
            if not pending or (budget.max_queries is not None and budget.spent >= budget.max_queries):
                break
            if attempt:
                tally.add("retried", len(pending))
            requests = []
            for i in pending:
                example, sample_index = sources[i]
                fields = {**source_fields(example, task), **task.kind.prompt_fields(example.label)}
                requests.append(self.request(NEW_EXAMPLE, task, fields,
                                             sample_index + attempt * RETRY_STRIDE))
            for j, fields, response in self.parsed_replies(teacher, NEW_EXAMPLE, task, requests,
                                                           f"[iteration {iteration}] teacher", tally):
                asked = requests[j].source.get("target_label")
                if asked is not None and "label" not in fields:  # the example alone: the label asked for
                    fields = {**fields, "label": asked}
                    tally.add("label_from_request")
                elif asked is not None and fields["label"] != asked:  # a label of the set, not the one asked
                    tally.drop("other_label", Reply.of(NEW_EXAMPLE, requests[j], response),
                               f"asked for {asked}, wrote {fields['label']}", question=fields["question"])
                    continue
                if filters.admit(fields["question"], tally, Reply.of(NEW_EXAMPLE, requests[j], response)):
                    kept[pending[j]] = (fields, response)
            pending = [i for i in pending if i not in kept]
        for i in pending:
            tally.drop("unanswered_after_retries", source_id=sources[i][0].id, step=NEW_EXAMPLE.name,
                       detail=f"no kept reply after {1 + self.retries} attempt(s)")
        added = []
        for i in sorted(kept):  # in the sources' order, whatever attempt answered
            (example, _), (fields, response) = sources[i], kept[i]
            new = make_example(task, f"gen-{iteration}-{len(added)}", fields["question"],
                               task.kind.target(fields), fields["label"])
            added.append(Generated(new, {"strategy": self.name, "iteration": iteration,
                                         "source_id": example.id, "written_by": writer(teacher),
                                         "role": "teacher", "cache_key": response.key}))
        tally.add("added", len(added))
        job.add_generated(iteration, added, tally)
        self.refuse_if_nothing_parsed(tally)
        return added
