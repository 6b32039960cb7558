"""Filters on generated questions, each counted: decontamination against the test split (word n-gram
overlap, or an exact copy of a short test question) and near-duplicates by ROUGE-L (LLM2LLM drops
>= 0.95; self-instruct's classic threshold is 0.7)."""

import re

from bench.tasks import TaskData, question_of


def words(text: str) -> list:
    return re.findall(r"\w+", text.lower())


def rouge_l(a: list, b: list) -> float:
    """ROUGE-L F1 of two token lists (longest common subsequence)."""
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    return 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))


class Filters:
    def __init__(self, task: TaskData, training: list, near_duplicate_rouge_l: float | None,
                 decontaminate_ngram: int | None):
        self.threshold = near_duplicate_rouge_l
        self.n = decontaminate_ngram
        self.known = [words(question_of(e, task)) for e in training]  # grows as questions are admitted
        test = [words(question_of(e, task)) for e in task.test]
        self.test_texts = {" ".join(t) for t in test}
        self.test_ngrams = {" ".join(t[i:i + self.n]) for t in test for i in range(len(t) - self.n + 1)} \
            if self.n else set()

    def contaminated(self, tokens: list) -> bool:
        if " ".join(tokens) in self.test_texts:
            return True
        return any(" ".join(tokens[i:i + self.n]) in self.test_ngrams for i in range(len(tokens) - self.n + 1))

    def near_duplicate(self, tokens: list) -> bool:
        t = self.threshold
        for other in self.known:
            # F1 >= t needs an LCS of t(a+b)/2, which neither the shorter length nor the overlap may rule out
            if min(len(tokens), len(other)) < t * (len(tokens) + len(other)) / 2:
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
        self.known.append(tokens)
        return True

