"""The three strategies of the budget study (Chan, Pu et al. 2024; REFERENCE §2), at a query budget Q
(budget.max_queries, or budget.ratio x |S|).

How Q is spread (the rule the study leaves open, made explicit): one generated example costs `c` queries —
answer augmentation 1 (a teacher answer); question rephrase 2 (augmenter rewrite + teacher answer); new
question 3 (augmenter question + augmenter self-check + teacher answer) — or 1 for each when
budget.count_augmenter=false, so that Q counts teacher answers only. The plan has floor(Q / c) examples,
drawn round-robin over the seed set in seed order (example j from seed j mod |S|, as its
(j div |S|)-th sample: answers per question differ by at most one); the Q mod c queries left over buy
extra teacher answers to the first planned questions, so the plan spends exactly Q. Failures, drops and
refusals are counted; the budget itself is a hard cap in the Teacher, so Q is never exceeded."""

from bench.errors import BenchError
from bench.strategies.base import Generated, Strategy, Tally, make_example, source_fields, writer


class BudgetedStrategy(Strategy):
    augmenter_steps = 0  # augmenter queries per generated example
    gold_known = True  # the question's gold answer is the seed's (answer augmentation, rephrase)
    new_questions = True  # the questions are new text, to be filtered (not the seed questions)

    def __init__(self, verify: str = "none", self_check: bool = True, **shared):
        super().__init__(**shared)
        if verify not in ("none", "gold"):
            raise BenchError(f"strategy.verify={verify!r}: use none or gold")
        self.verify = verify
        self.self_check = self_check

    def plan(self, job) -> tuple:
        """(examples planned, extra teacher answers) for the job's budget Q."""
        budget = job.teacher.budget.max_queries
        if budget is None:
            raise BenchError(f"strategy {self.name} needs a query budget: budget.max_queries=Q or "
                             "budget=ratio budget.ratio=BR")
        cost = 1 + (self.augmenter_steps if job.config.budget.count_augmenter else 0)
        return budget // cost, budget % cost

    def run(self, job) -> None:
        seed, tally = list(job.seed_set), Tally()
        planned, extra = self.plan(job)
        sources = [(seed[j % len(seed)], j // len(seed)) for j in range(planned)]
        # [(seed example, question, its provenance, which answer to it this is)]
        questions = self.questions(job, sources, tally)
        # the left-over queries: one more answer to each of the first questions
        asks = questions + [(example, question, origin, index + 1) for example, question, origin, index in
                            questions[:extra]]
        added = self.answers(job, asks, tally)
        tally.add("added", len(added))
        job.add_generated(1, added, tally)
        job.train_and_score(seed + [g.example for g in added], iteration=1)

    def questions(self, job, sources: list, tally: Tally) -> list:
        """The questions to answer; answer augmentation keeps the seed questions."""
        # the k-th pass over the seed set asks for each question's k-th answer
        return [(example, source_fields(example, job.task)["question"], {"question_by": "seed"}, index)
                for example, index in sources]

    def answers(self, job, asks: list, tally: Tally) -> list:
        task, teacher = job.task, job.teacher
        requests = []
        for example, question, _, sample_index in asks:
            fields = {**source_fields(example, task), "question": question} if self.gold_known \
                else {"id": example.id, "question": question}  # a new question's answer is unknown
            # a seed question's k-th sample: the index keeps k answers to one question distinct
            requests.append(self.request("answer", "answer", task, fields, "teacher", sample_index))
        tally.add("answer_requests", len(requests))
        filters = self.filters(task, job.seed_set)
        added = []
        for (example, question, origin, _), response in zip(asks, teacher.generate(requests, f"{self.name}: teacher")):
            if response is None:
                tally.add("no_answer")
                continue
            fields = self.parse("answer", task, response.text, tally)
            if fields is None:
                continue
            if self.verify == "gold" and self.gold_known and fields["label"] != example.label:
                tally.add("failed_verification")
                continue
            if self.new_questions and not filters.admit(question, tally):
                continue
            target = fields["answer"] if task.config.kind == "math" else fields["label"]
            new = make_example(task, f"gen-1-{len(added)}", question, target, fields["label"])
            added.append(Generated(new, {"strategy": self.name, "iteration": 1, "source_id": example.id,
                                         **origin, "written_by": writer(teacher), "role": "teacher",
                                         "cache_key": response.key}))
        return added

    def augmented_questions(self, job, step: str, sources: list, tally: Tally) -> list:
        """The augmenter's questions for `step` (rephrase or new_question), parsed; the k-th question
        from one seed is the seed's k-th sample."""
        task, augmenter = job.task, job.augmenter
        requests = [self.request(step, step, task, source_fields(example, task), "augmenter", index)
                    for example, index in sources]
        tally.add(f"{step}_requests", len(requests))
        kept = []
        for (example, index), response in zip(sources, augmenter.generate(requests, f"{self.name}: augmenter")):
            if response is None:
                tally.add("no_question")
                continue
            fields = self.parse(step, task, response.text, tally)
            if fields is not None:
                kept.append((example, fields["question"], {"question_by": writer(augmenter),
                                                           "question_cache_key": response.key}, 0))
        return kept


class AnswerAugmentation(BudgetedStrategy):
    """Keep the seed questions; Q teacher answers spread over them (chain of thought, sampled)."""

    name = "answer_augmentation"
    new_questions = False


class QuestionRephrase(BudgetedStrategy):
    """The augmenter rewrites a seed question keeping its answer; the teacher answers the rewrite."""

    name = "question_rephrase"
    augmenter_steps = 1

    def questions(self, job, sources: list, tally: Tally) -> list:
        return self.augmented_questions(job, "rephrase", sources, tally)


class NewQuestion(BudgetedStrategy):
    """The augmenter writes a new question inspired by a seed and checks it is answerable and well
    formed; the teacher answers the ones that pass."""

    name = "new_question"
    gold_known = False

    @property
    def augmenter_steps(self) -> int:
        return 2 if self.self_check else 1

    def questions(self, job, sources: list, tally: Tally) -> list:
        questions = self.augmented_questions(job, "new_question", sources, tally)
        if not self.self_check:
            return questions
        task = job.task
        requests = [self.request("check", "check", task, {"id": example.id, "question": question}, "augmenter")
                    for example, question, _, _ in questions]
        kept = []
        for item, response in zip(questions, job.augmenter.generate(requests, "new_question: self-check")):
            fields = self.parse("check", task, response.text, tally) if response is not None else None
            if fields is not None and fields["verdict"].lower() == "yes":
                kept.append(item)
            else:
                tally.add("failed_self_check")
        return kept
