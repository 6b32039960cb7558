from bench.strategies.base import Strategy


class Finetune(Strategy):
    """No augmentation: the student is fine-tuned on the seed set alone (the baseline)."""

    name = "finetune"

    def run(self, job) -> None:
        job.train_and_score(job.seed_set, iteration=0)
