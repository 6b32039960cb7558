"""Filters on generated questions, each counted: decontamination against the test split (word n-gram
overlap, or an exact copy of a short test question) and near-duplicates by ROUGE-L (a question more similar
than the threshold to a known one: LLM2LLM's is 0.95, self-instruct's classic 0.7; both drop > t).

The near-duplicate search is sub-quadratic and exact. ROUGE-L F1 >= t needs an LCS, hence a shared bag of
tokens, of at least t(m + n)/2 tokens, which is at least t m/(2 - t) whatever the other length n. So
with every question's tokens sorted rarest first (one fixed order), two questions that can be near
duplicates share a token within each one's first m - ceil(t m/(2 - t)) + 1 tokens (prefix filtering, as
in all-pairs similarity joins): an inverted index over those few rare tokens gives the candidates, and
the exact bit-parallel LCS decides. The decisions are those of comparing every pair."""

from collections import Counter

from bench.config import FiltersConfig
from bench.tasks import TaskData, question_of
from bench.text import rouge_l, words


def near_duplicate_pair(tokens: list, bag: Counter, other: list, other_bag: Counter, t: float) -> bool:
    """ROUGE-L F1 > t. The shorter length and the shared bag of tokens bound the LCS from above, and rule
    out most pairs before the exact computation."""
    needed = t * (len(tokens) + len(other)) / 2
    if min(len(tokens), len(other)) < needed or sum((bag & other_bag).values()) < needed:
        return False
    return rouge_l(tokens, other) > t


class Filters:
    def __init__(self, task: TaskData, training: list, settings: FiltersConfig):
        self.threshold = settings.near_duplicate_rouge_l
        self.n = settings.decontaminate_ngram
        questions = [words(question_of(example, task)) for example in training]
        # the fixed order of the prefix filter: rarest first in the training questions (unseen: rarest)
        self.frequency = Counter(token for tokens in questions for token in tokens)
        self.known: list = []  # (tokens, bag of tokens) of the known questions; admitted ones join them
        self.texts: list = []  # the known questions as written, for a drop's record
        self.index: dict = {}  # (token, k-th occurrence) of a known prefix -> ids of the known questions
        for tokens, example in zip(questions, training, strict=True):
            self.remember(tokens, question_of(example, task))
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

    def prefix(self, tokens: list) -> list:
        """The first m - o + 1 of the tokens' (token, occurrence) elements, rarest first, where o is a
        lower bound of the shared tokens any near duplicate must have (floored: a longer prefix is safe)."""
        t, m = self.threshold, len(tokens)
        shared_at_least = max(1, int(t * m / (2 - t) - 1e-9))
        seen: Counter = Counter()
        elements = []
        for token in tokens:
            elements.append((token, seen[token]))
            seen[token] += 1
        elements.sort(key=lambda e: (self.frequency[e[0]], e))
        return elements[: m - shared_at_least + 1]

    def remember(self, tokens: list, text: str) -> None:
        if self.threshold is not None and tokens:
            for element in self.prefix(tokens):
                self.index.setdefault(element, []).append(len(self.known))
        self.known.append((tokens, Counter(tokens)))
        self.texts.append(text)

    def near_duplicate(self, tokens: list) -> str | None:
        """The first known question this one is a near duplicate of, or None."""
        if not tokens:
            return None
        t, bag = self.threshold, Counter(tokens)
        candidates = {i for element in self.prefix(tokens) for i in self.index.get(element, ())}
        return next((self.texts[i] for i in sorted(candidates)
                     if near_duplicate_pair(tokens, bag, *self.known[i], t)), None)

    def admit(self, question: str, tally, about=None) -> bool:
        """Whether a generated question may join the training data; a kept one is remembered, so later
        near-copies of it are caught too. `about`: the reply, for the drop's record."""
        tokens = words(question)
        if self.n and self.contaminated(tokens):
            tally.drop("contaminated", about, f"shares {self.n} words in a row with a test question",
                       question=question)
            return False
        if self.threshold is not None and (twin := self.near_duplicate(tokens)) is not None:
            tally.drop("near_duplicate", about, f"ROUGE-L > {self.threshold:g} with: {twin}",
                       question=question)
            return False
        self.remember(tokens, question)
        return True
