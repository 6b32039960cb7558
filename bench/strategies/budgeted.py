"""The three strategies of the budget study (Chan, Pu et al. 2024; docs/protocols.md §2), at a query budget Q
(budget.max_queries, or budget.ratio x |S|).

How Q is spread (the rule the study leaves open, made explicit): one generated example costs `c` queries —
answer augmentation 1 (a teacher answer); question rephrase 2 (augmenter rewrite + teacher answer); new
question 3 (augmenter question + augmenter self-check + teacher answer) — or 1 for each when
budget.count_augmenter=false, so that Q counts teacher answers only; verify=agreement makes the answer
part k queries (strategy.agreement_samples), the example kept when a strict majority of the k agree. Each
round plans floor(R / c) examples for the R queries still unspent, drawn round-robin over the seed set
in seed order (example j from seed j mod |S|, as its (j div |S|)-th sample: answers per question differ
by at most one); new
questions are filtered before any answer is paid for, and what dropped questions and failed requests
leave unspent is planned again in the next round. Fewer than c queries left over buy extra teacher
answers to the first questions, so the budget is spent exactly. Drops and failures are counted; the
budget is a hard cap in the Teacher, so Q is never exceeded."""

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from bench.config import FiltersConfig, at_least
from bench.errors import BenchError
from bench.steps import ANSWER, CHECK, NEW_QUESTION, REPHRASE, Step
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


class Verify(StrEnum):
    none = "none"
    gold = "gold"  # keep only answers that agree with the seed's gold answer
    agreement = "agreement"  # k teacher answers, kept when a strict majority agree


@dataclass(kw_only=True)
class BudgetedStrategy(Strategy):
    family = "budgeted"
    rivals = True
    spends_budget = True
    report_table = ("budget_strategies", "Budgeted strategies: test accuracy per strategy over BR = Q / |S|")
    augmenter_steps: ClassVar[int] = 0  # augmenter queries per generated example
    gold_known: ClassVar[bool] = True  # the question's gold answer is the seed's (answer aug., rephrase)

    temperature: float = 0.7
    # gold: keep only answers that agree with the seed's gold answer; agreement: k sampled teacher answers
    # per question (agreement_samples, each a query), kept when a strict majority agree
    verify: Verify = Verify.none
    agreement_samples: int = 3
    filters: FiltersConfig = field(default_factory=lambda: FiltersConfig(near_duplicate_rouge_l=0.95,
                                                                         decontaminate_ngram=13))

    def check(self) -> None:
        super().check()
        at_least("strategy.agreement_samples", self.agreement_samples, 2)

    @property
    def answers_per_example(self) -> int:
        return self.agreement_samples if self.verify == Verify.agreement else 1

    max_rounds = 20  # top-up rounds for budget freed by dropped questions and failed requests

    def cost(self, job: StrategyJob) -> int:
        """Queries one generated example costs against Q."""
        return self.cost_of(job.count_augmenter)

    def cost_of(self, count_augmenter: bool) -> int:
        return self.answers_per_example + (self.augmenter_steps if count_augmenter else 0)

    def workload(self, seed_size: int, max_queries: int | None, count_augmenter: bool) -> Workload:
        """Q spent in full: Q // c examples; the augmenter's queries are paid whether or not Q counts them."""
        if max_queries is None:
            raise BenchError(f"strategy {self.name} needs a query budget: budget.max_queries=Q or "
                             "budget=ratio budget.ratio=BR")
        cost = self.cost_of(count_augmenter)
        if max_queries < cost:
            raise BenchError(
                f"the query budget Q={max_queries} (budget.max_queries, or floor(budget.ratio x |S|) with "
                f"|S|={seed_size}) buys no example of {self.name}, which costs {cost} queries each; raise it "
                f"to at least {cost}"
            )
        examples = max_queries // cost
        augmenter = examples * self.augmenter_steps
        teacher = max_queries - (augmenter if count_augmenter else 0)
        trained = seed_size + teacher // self.answers_per_example
        return Workload([(trained, None)], [0], teacher_queries=teacher, augmenter_queries=augmenter)

    def run(self, job: StrategyJob) -> None:
        budget = job.budget
        if budget.max_queries is None:
            raise BenchError(f"strategy {self.name} needs a query budget: budget.max_queries=Q or "
                             "budget=ratio budget.ratio=BR")
        seed, tally, cost = list(job.seed_set), Tally(), self.cost(job)
        self.choose_worked_example(seed)
        filters = self.question_filters(job.task, seed)  # new questions only: decontamination, near-dupes
        added, answered, drawn = [], [], 0
        for _ in range(self.max_rounds):
            planned = (budget.max_queries - budget.spent) // cost
            if planned == 0:
                break
            # round-robin over the seed set: example j comes from seed j mod |S|, as its (j div |S|)-th
            sources = [(seed[j % len(seed)], j // len(seed)) for j in range(drawn, drawn + planned)]
            drawn += planned
            questions = self.questions(job, sources, filters, tally)
            added += self.answers(job, questions, tally)
            answered += questions
        # fewer queries left than one example costs: one more answer to each of the first questions
        extra = (budget.max_queries - budget.spent) // self.answers_per_example
        added += self.answers(job, [(e, q, origin, k + 1) for e, q, origin, k in answered[:extra]], tally)
        tally.add("added", len(added))
        job.add_generated(1, added, tally)
        self.refuse_if_nothing_parsed(tally)
        job.train_and_score(seed + [g.example for g in added], iteration=1)

    def questions(self, job: StrategyJob, sources: list, filters, tally: Tally) -> list:
        """[(seed example, question, its provenance, which answer to it this is)]; answer augmentation
        keeps the seed questions."""
        # the k-th pass over the seed set asks for each question's k-th answer
        return [(example, source_fields(example, job.task)["question"], {"question_by": "seed"}, index)
                for example, index in sources]

    def answers(self, job: StrategyJob, asks: list, tally: Tally) -> list:
        """One teacher answer per ask, or with verify=agreement k answers, kept when a majority agree."""
        if not asks:
            return []
        task, teacher, k = job.task, job.teacher, self.answers_per_example
        requests = []
        for example, question, _, sample_index in asks:
            fields = {**source_fields(example, task), "question": question} if self.gold_known \
                else {"id": example.id, "question": question}  # a new question's answer is unknown
            # a seed question's k-th sample: the index keeps k answers to one question distinct
            requests += [self.request(ANSWER, task, fields, sample_index * k + j) for j in range(k)]
        tally.add("answer_requests", len(requests))
        replies: dict = {}  # ask -> [(parsed fields, response)]
        for i, fields, response in self.parsed_replies(
            teacher, ANSWER, task, requests, f"{self.name}: teacher", tally
        ):
            replies.setdefault(i // k, []).append((fields, response))
        added = []
        for a, answers in sorted(replies.items()):
            example, question, origin, _ = asks[a]
            if k > 1:  # the answer k sampled replies agree on, by a strict majority of the k
                votes = Counter(fields["label"] for fields, _ in answers)
                label, count = votes.most_common(1)[0]
                if count * 2 <= k:
                    tally.drop("no_agreement", Reply.of(ANSWER, requests[a * k], answers[0][1]),
                               f"the {k} sampled answers: {dict(votes)}", question=question)
                    continue
                answers = [(f, r) for f, r in answers if f["label"] == label]
            fields, response = answers[0]
            if self.verify == "gold" and self.gold_known and fields["label"] != example.label:
                tally.drop("failed_verification", Reply.of(ANSWER, requests[a * k], response),
                           f"answered {fields['label']}, the gold answer is {example.label}",
                           question=question)
                continue
            new = make_example(
                task, f"gen-1-{len(added)}", question, task.kind.target(fields), fields["label"]
            )
            added.append(Generated(new, {"strategy": self.name, "iteration": 1, "source_id": example.id,
                                         **origin, "written_by": writer(teacher), "role": "teacher",
                                         "cache_key": response.key}))
        return added

    def augmented_questions(self, job: StrategyJob, step: Step, sources: list, filters, tally: Tally) -> list:
        """The augmenter's questions for `step` (REPHRASE or NEW_QUESTION), parsed; the k-th question
        from one seed is the seed's k-th sample."""
        task, augmenter = job.task, job.augmenter
        requests = [self.request(step, task, source_fields(example, task), index)
                    for example, index in sources]
        tally.add(f"{step.name}_requests", len(requests))
        kept = []
        replies = self.parsed_replies(augmenter, step, task, requests, f"{self.name}: augmenter", tally,
                                      missing="no_question")
        for i, fields, response in replies:
            if filters.admit(fields["question"], tally, Reply.of(step, requests[i], response)):
                kept.append((sources[i][0], fields["question"], {"question_by": writer(augmenter),
                                                                 "question_cache_key": response.key}, 0))
        return kept


@dataclass(kw_only=True)
class AnswerAugmentation(BudgetedStrategy):
    """Keep the seed questions; Q teacher answers spread over them (chain of thought, sampled)."""

    name = "answer_augmentation"
    # the questions repeat by design: no near-duplicate filter
    filters: FiltersConfig = field(default_factory=lambda: FiltersConfig(decontaminate_ngram=13))


@dataclass(kw_only=True)
class QuestionRephrase(BudgetedStrategy):
    """The augmenter rewrites a seed question keeping its answer; the teacher answers the rewrite."""

    name = "question_rephrase"
    augmenter_steps = 1

    def questions(self, job: StrategyJob, sources: list, filters, tally: Tally) -> list:
        return self.augmented_questions(job, REPHRASE, sources, filters, tally)


@dataclass(kw_only=True)
class NewQuestion(BudgetedStrategy):
    """The augmenter writes a new question inspired by a seed and checks it is answerable and well
    formed; the teacher answers the ones that pass. verify=gold does not apply (a new question's gold
    answer is unknown)."""

    name = "new_question"
    gold_known = False

    self_check: bool = True  # the augmenter checks its question (one more query an example)

    @property
    def augmenter_steps(self) -> int:
        return 2 if self.self_check else 1

    def questions(self, job: StrategyJob, sources: list, filters, tally: Tally) -> list:
        questions = self.augmented_questions(job, NEW_QUESTION, sources, filters, tally)
        if not self.self_check:
            return questions
        task = job.task
        requests = [self.request(CHECK, task, {"id": example.id, "question": question})
                    for example, question, _, _ in questions]
        verdicts = {i: (fields["verdict"], response) for i, fields, response in self.parsed_replies(
            job.augmenter, CHECK, task, requests, "new_question: self-check", tally, missing=None)}
        passed = {i for i, (verdict, _) in verdicts.items() if verdict.lower() == "yes"}
        for i, (example, question, origin, _) in enumerate(questions):  # no answer, unparseable or a no
            if i not in passed:
                verdict, response = verdicts.get(i, (None, None))
                tally.drop("failed_self_check", detail=f"the self-check said {verdict!r}" if verdict else
                           "the self-check's reply was missing or unparseable", question=question,
                           source_id=example.id, step=CHECK.name, reply=response.text if response else None,
                           cache_key=origin.get("question_cache_key"))
        return [item for i, item in enumerate(questions) if i in passed]
