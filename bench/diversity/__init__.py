"""Diversity of generated datasets: the classic baselines (baselines.py) and the LLM cluster-agent
metric (cluster_agent.py), scored on every generated dataset of a run."""

# +1: a higher score means more diverse; -1: a lower one does (reports read this without the models)
DIRECTION = {"ngram_diversity": 1, "compression_ratio": -1, "self_repetition": -1, "mean_length": 0,
             "pairwise_rouge_l": -1, "kmeans_inertia": 1, "vendi": 1, "cluster_agent": 1, "perplexity": 0,
             "perplexity_gap": 0}


def text_of(example, what: str) -> str:
    """The text a score sees: the question alone, or the question with its answer."""
    question = (example.record or {}).get("question") or example.prompt
    return question if what == "question" else f"{question}\n{example.target}"


def score_dataset(examples: list, cfg, cluster_agent=None, reference: list | None = None) -> dict:
    """Every enabled score of one dataset; the cluster agent's (a ClusterAgent) as `cluster_agent`,
    with its stderr and the detail of its rounds; `reference`: real examples (the seed set), for the
    perplexity gap."""
    from bench.diversity.baselines import baseline_scores

    texts = [text_of(e, cfg.text) for e in examples]
    real = [text_of(e, cfg.text) for e in reference or ()]
    scores = {"examples": len(texts), **baseline_scores(texts, cfg, real)}
    if cluster_agent is not None:
        result = cluster_agent.score(texts)
        scores["cluster_agent"] = result["score"]
        scores["cluster_agent_stderr"] = result.get("stderr")
        scores["cluster_agent_detail"] = result
    return scores
