from dataclasses import dataclass

from bench.strategies.base import Strategy, StrategyJob, Workload


@dataclass(kw_only=True)
class Finetune(Strategy):
    """No augmentation: the student is fine-tuned on the seed set alone (the baseline every generating
    strategy is judged against)."""

    name = "finetune"
    family = "finetune"
    uses_teacher = False
    baseline = None

    def run(self, job: StrategyJob) -> None:
        # scoring S as well makes this the very stage LLM2LLM's iteration 0 is: a sweep trains it once
        job.train_and_score(job.seed_set, iteration=0, score_on=job.seed_set)

    def workload(self, seed_size: int, max_queries: int | None, count_augmenter: bool) -> Workload:
        return Workload(stages=[(seed_size, None)], scored=[seed_size])
