"""The LLM cluster-agent diversity metric (Chen et al. 2024, arXiv 2410.15226; docs/protocols.md §3).
No public implementation exists; this one follows the paper's description step by step:

1. Criteria: M rounds, each showing the LLM J random samples and asking for 3-5 metadata and 3-5 metric
   rubrics; all answers are summarised into a short list, which becomes one-sentence criteria.
2. Clustering: N rounds, each showing K random samples and asking for a partition under those criteria
   as JSON; then, per cluster of two or more, a verification prompt. An invalid cluster is split into
   singletons or dropped from the round (`invalid_clusters`).
3. D = (1/N) sum_i C_i / S_i, with C_i clusters and S_i the mean cluster size of round i (= C_i^2 / K),
   reported with its standard error over rounds.

Every query goes through the Teacher (cached, budgeted, accounted). A reply that is not valid JSON, or
not a partition of the K samples, is repaired where it can be (indices out of range or repeated are
removed, samples left out become singletons, 0-based numbering is recognised) or the round is dropped;
every repair and drop is counted, none crashes the run."""

import json
import math
import random
import re
from collections import Counter

import jinja2

from bench.teachers import Request, Teacher

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined)


def parse_partition(text: str, k: int, counts: Counter) -> list[list[int]] | None:
    """The reply's clusters as lists of 0-based sample indices forming a partition of range(k), repaired
    where needed; None (counted) when there is nothing to repair."""
    data = _json(text)
    if data is None:
        counts["invalid_json"] += 1
        return None
    raw = data.get("clusters") if isinstance(data, dict) else data
    if not isinstance(raw, list):
        counts["no_cluster_list"] += 1
        return None
    clusters = []
    for item in raw:
        members = item.get("members", item.get("samples")) if isinstance(item, dict) else item
        members = members if isinstance(members, list) else [members]
        numbers = []
        for member in members:
            try:
                numbers.append(int(str(member).strip()))
            except ValueError:
                counts["not_a_number"] += 1
        clusters.append(numbers)
    flat = [n for c in clusters for n in c]
    if not flat:
        counts["empty_partition"] += 1
        return None
    one_based = not (0 in flat and k not in flat)  # the prompt numbers samples 1..K
    if not one_based:
        counts["zero_based"] += 1
    seen, partition = set(), []
    for numbers in clusters:
        kept = []
        for n in numbers:
            index = n - 1 if one_based else n
            if not 0 <= index < k:
                counts["out_of_range"] += 1
            elif index in seen:
                counts["duplicate"] += 1
            else:
                seen.add(index)
                kept.append(index)
        if kept:
            partition.append(kept)
    missing = [i for i in range(k) if i not in seen]
    if missing:
        counts["missing"] += len(missing)
    partition += [[i] for i in missing]
    if missing or len(seen) != len(flat):
        counts["repaired_rounds"] += 1
    return partition


def _json(text: str):
    """The JSON in a reply: the whole reply, a fenced block, or the outermost {...} or [...]."""
    candidates = [text, *re.findall(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)]
    for opener, closer in ("{}", "[]"):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, TypeError):
            continue
    return None


def round_score(partition: list[list[int]]) -> float:
    """C / S with S the mean cluster size: C^2 / (samples in the round)."""
    samples = sum(len(c) for c in partition)
    return len(partition) ** 2 / samples


def said_yes(text: str) -> bool | None:
    match = re.match(r"\W*(yes|no)\b", text.strip(), re.IGNORECASE)
    return None if match is None else match.group(1).lower() == "yes"


def bullet_lines(text: str) -> list[str]:
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in text.splitlines()]
    return [line for line in lines if line]


class ClusterAgent:
    def __init__(self, cfg, teacher: Teacher):
        for name, value in (
            ("criteria_rounds", cfg.criteria_rounds),
            ("criteria_samples", cfg.criteria_samples),
            ("clustering_rounds", cfg.clustering_rounds),
            ("clustering_samples", cfg.clustering_samples),
        ):
            if value < 1:
                raise ValueError(f"diversity.cluster_agent.{name}={value} must be at least 1")
        self.cfg = cfg
        self.teacher = teacher

    def request(self, step: str, context: dict, sample_index: int, source: dict) -> Request:
        text = _JINJA.from_string(self.cfg.prompts[step]).render(**context)
        return Request(messages=({"role": "user", "content": text},), temperature=self.cfg.temperature,
                       max_tokens=self.cfg.max_tokens, sample_index=sample_index, role="diversity",
                       kind=f"diversity_{step}", source=source)

    def ask(self, requests: list, what: str) -> list:
        return self.teacher.generate(requests, f"cluster agent: {what}")

    def criteria(self, texts: list[str], rng: random.Random, counts: Counter) -> list[str]:
        cfg = self.cfg
        rounds = [
            rng.sample(texts, min(cfg.criteria_samples, len(texts))) for _ in range(cfg.criteria_rounds)
        ]
        answers = self.ask([self.request("criteria", {"samples": s}, i, {"samples": s})
                            for i, s in enumerate(rounds)], "criteria")
        proposals = [a.text for a in answers if a is not None]
        counts["criteria_failed"] += len(answers) - len(proposals)
        if not proposals:
            return []
        summary = self.ask([self.request("criteria_summary", {"proposals": proposals}, 0, {})], "summary")[0]
        if summary is None:
            counts["criteria_failed"] += 1
            return []
        sentences = self.ask([self.request("criteria_sentences", {"summary": summary.text}, 0,
                                           {"summary": summary.text})], "criteria sentences")[0]
        return bullet_lines((sentences or summary).text)

    def score(self, texts: list[str], name: str = "dataset") -> dict:
        """D, its standard error over the valid rounds, the criteria and what was repaired or dropped."""
        cfg, counts = self.cfg, Counter()
        texts = [t for t in texts if t.strip()]
        if len(texts) < 2:
            return {"score": None, "note": "fewer than 2 texts"}
        rng = random.Random(f"{cfg.seed}/{len(texts)}/{texts[0]}/{texts[-1]}")
        criteria = self.criteria(texts, rng, counts)
        if not criteria:
            counts["no_criteria"] += 1
        k = min(cfg.clustering_samples, len(texts))
        rounds = [rng.sample(range(len(texts)), k) for _ in range(cfg.clustering_rounds)]
        context = {"criteria": criteria}
        replies = self.ask([self.request("cluster", {**context, "samples": [texts[i] for i in r]}, n,
                                         {"samples": [texts[i] for i in r]}) for n, r in enumerate(rounds)],
                           "clustering")
        partitions = []
        for reply in replies:
            if reply is None:
                counts["clustering_failed"] += 1
                partitions.append(None)
            else:
                partitions.append(parse_partition(reply.text, k, counts))
        if cfg.verify:
            partitions = self.verify(rounds, partitions, texts, context, counts)
        scores = [round_score(p) for p in partitions if p]
        counts["dropped_rounds"] = len(rounds) - len(scores)
        mean = sum(scores) / len(scores) if scores else None
        stderr = (math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1) / len(scores))
                  if len(scores) > 1 else None)
        return {"score": mean, "stderr": stderr, "rounds": len(scores), "k": k, "criteria": criteria,
                "counts": dict(counts)}

    def verify(
        self, rounds: list, partitions: list, texts: list[str], context: dict, counts: Counter
    ) -> list:
        """One check per cluster of two or more; an invalid cluster is split or dropped."""
        asks = [
            (n, c) for n, p in enumerate(partitions) if p for c, members in enumerate(p) if len(members) > 1
        ]
        requests = []
        for n, c in asks:
            members = [texts[rounds[n][i]] for i in partitions[n][c]]
            requests.append(self.request("verify", {**context, "samples": members}, n, {"samples": members}))
        verdicts = {}
        for (n, c), reply in zip(asks, self.ask(requests, "verification")):
            verdict = said_yes(reply.text) if reply is not None else None
            if verdict is None:
                counts["verify_unanswered"] += 1  # kept as the clustering said
            verdicts[n, c] = verdict
        checked = []
        for n, partition in enumerate(partitions):
            if not partition:
                checked.append(partition)
                continue
            kept = []
            for c, members in enumerate(partition):
                if verdicts.get((n, c)) is False:
                    counts["invalid_clusters"] += 1
                    if self.cfg.invalid_clusters == "split":
                        kept += [[i] for i in members]
                    continue
                kept.append(members)
            checked.append(kept or None)
        return checked
