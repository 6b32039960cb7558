"""Filters on generated questions, each counted: decontamination against the test split (word n-gram
overlap, or an exact copy of a short test question) and near-duplicates by ROUGE-L (LLM2LLM drops
>= 0.95; self-instruct's classic threshold is 0.7)."""

from collections import Counter

from bench.config import FiltersConfig
from bench.tasks import TaskData, question_of
from bench.text import rouge_l, words


class Filters:
    def __init__(self, task: TaskData, training: list, settings: FiltersConfig):
        self.threshold = settings.near_duplicate_rouge_l
        self.n = settings.decontaminate_ngram
        self.known = []  # (tokens, bag of tokens) of the training questions; grows as questions are admitted
        for example in training:
            self.remember(words(question_of(example, task)))
        test = [words(question_of(e, task)) for e in task.test]
        self.test_texts = {" ".join(t) for t in test}
        self.test_ngrams = {" ".join(t[i:i + self.n]) for t in test for i in range(len(t) - self.n + 1)} \
            if self.n else set()

    def contaminated(self, tokens: list) -> bool:
        if " ".join(tokens) in self.test_texts:
            return True
        return any(
            " ".join(tokens[i : i + self.n]) in self.test_ngrams for i in range(len(tokens) - self.n + 1)
        )

    def remember(self, tokens: list) -> None:
        self.known.append((tokens, Counter(tokens)))

    def near_duplicate(self, tokens: list) -> bool:
        t, bag = self.threshold, Counter(tokens)
        for other, other_bag in self.known:
            # F1 >= t needs an LCS of t(a+b)/2 tokens; the shorter length and the shared bag of tokens
            # bound the LCS from above, and rule out nearly every pair before the exact computation
            needed = t * (len(tokens) + len(other)) / 2
            if min(len(tokens), len(other)) < needed or sum((bag & other_bag).values()) < needed:
                continue
            if rouge_l(tokens, other) >= t:
                return True
        return False

    def admit(self, question: str, tally) -> bool:
        """Whether a generated question may join the training data; a kept one is remembered, so later
        near-copies of it are caught too."""
        tokens = words(question)
        if self.n and self.contaminated(tokens):
            tally.add("contaminated")
            return False
        if self.threshold is not None and self.near_duplicate(tokens):
            tally.add("near_duplicate")
            return False
        self.remember(tokens)
        return True

