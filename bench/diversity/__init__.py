"""Diversity of generated datasets: the classic baselines (baselines.py) and the LLM cluster-agent
metric (cluster_agent.py), scored on every generated dataset of a run."""

from bench.diversity.baselines import DIRECTION, baseline_scores
from bench.diversity.cluster_agent import ClusterAgent
from bench.errors import BenchError
from bench.tasks import Example

__all__ = ["DIRECTION", "ClusterAgent", "baseline_scores", "score_dataset", "text_of"]


def text_of(example: Example, what: str) -> str:
    """The text a score sees: the question alone, or the question with its answer."""
    question = (example.record or {}).get("question") or example.prompt
    if what == "question":
        return question
    if what == "example":
        return f"{question}\n{example.target}"
    raise BenchError(f"diversity.text={what!r}: use example or question")


def score_dataset(examples: list, cfg, cluster_agent: ClusterAgent | None = None) -> dict:
    """Every enabled score of one dataset; the cluster agent's as `cluster_agent` (+ stderr, counts)."""
    texts = [text_of(e, cfg.text) for e in examples]
    scores = {"examples": len(texts), **baseline_scores(texts, cfg)}
    if cluster_agent is not None:
        result = cluster_agent.score(texts)
        scores["cluster_agent"] = result["score"]
        scores["cluster_agent_stderr"] = result.get("stderr")
        scores["cluster_agent_detail"] = result
    return scores
