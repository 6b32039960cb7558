"""Strategies on real task data, with the simulated teacher and with scripted teachers. The training side
is a recording job here (what was trained on, from which weights, which examples came back wrong); the
real training path runs in the end-to-end tests at the bottom."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from bench.errors import BenchError
from bench.seed_set import sample_seed_set
from bench.steps import NEW_EXAMPLE
from bench.strategies import build_strategy
from bench.strategies.llm2llm import RETRY_STRIDE
from bench.tasks import load_task, question_of
from bench.teachers import LocalBackend, Response, Teacher, build_teachers
from bench.teachers.cache import GenerationCache
from bench.text import rouge_l, words
from tests.conftest import QUICK, compose_config, run_cli, typed_config


@dataclass
class FakeRound:
    name: str
    wrong_ids: set


@dataclass
class RecordingJob:
    """A StrategyJob (bench/strategies/base.py); training is recorded, the wrong examples scripted."""

    config: object
    task: object
    seed_set: list
    teacher: object
    augmenter: object
    wrong: callable = lambda scored, iteration: {e.id for e in scored[:5]}
    trained: list = field(default_factory=list)  # (iteration, example ids, start_from, keep_weights)
    generated: dict = field(default_factory=dict)
    paired: list = field(default_factory=list)  # the strategies finished_cell was asked for

    @property
    def budget(self):
        return self.teacher.budget

    @property
    def count_augmenter(self):
        return self.config.budget.count_augmenter

    @property
    def recipe(self):
        return self.config.train

    def train_and_score(self, examples, iteration, start_from=None, score_on=(), keep_weights=False,
                        recipe=None):
        self.trained.append(
            (iteration, [e.id for e in examples], start_from and start_from.name, keep_weights)
        )
        return FakeRound(f"stage-{iteration}", wrong_ids=self.wrong(list(score_on), iteration))

    def add_generated(self, iteration, generated, tally):
        self.generated[iteration] = (generated, dict(tally.counts))

    def finished_cell(self, strategy):
        self.paired.append(strategy)
        return SimpleNamespace(added=9)  # what the paired iterative cell generated, as the store would say


def job_for(tmp_path, data_dir, *overrides, task="trec", seed_size=100, teacher=None, **job_args):
    cfg = compose_config(f"task={task}", f"seed_set.size={seed_size}", f"cache_path={tmp_path}/c.sqlite",
                         *overrides)
    config = typed_config(f"task={task}", f"seed_set.size={seed_size}", f"cache_path={tmp_path}/c.sqlite",
                          *overrides)
    data = load_task(config.task, str(data_dir))
    seed = sample_seed_set(data.train, config.seed_set, task)
    built = build_teachers(config, data, [e.id for e in seed])
    if teacher is not None:
        budget = built[0].budget
        built = (Teacher(teacher, GenerationCache(tmp_path / "scripted.sqlite"), budget),) * 2
    return build_strategy(cfg.strategy), RecordingJob(config, data, seed, built[0], built[1], **job_args)


class Scripted(LocalBackend):
    """A teacher that says what the test tells it to."""

    name, model = "scripted", "v1"

    def __init__(self, replies):
        self.replies = replies

    def complete_batch(self, requests):
        return [Response(text=self.replies(r)) for r in requests]


# -- LLM2LLM -------------------------------------------------------------------------------------------


def test_llm2llm_augments_only_the_wrong_seed_examples_and_retrains_from_base(tmp_path, data_dir):
    strategy, job = job_for(tmp_path, data_dir, "strategy=llm2llm", "strategy.iterations=3")
    strategy.run(job)
    seed_ids = [e.id for e in job.seed_set]
    assert [t[0] for t in job.trained] == [0, 1, 2]
    assert all(start is None and not keep for _, _, start, keep in job.trained)  # every round from base
    for iteration in (1, 2):
        generated, counts = job.generated[iteration]
        assert counts["requested"] == 5  # one per wrong seed example
        assert {g.provenance["source_id"] for g in generated} <= set(seed_ids[:5])
        assert all(
            g.provenance["strategy"] == "llm2llm" and g.provenance["iteration"] == iteration
            for g in generated
        )
        assert all(g.example.label == next(e.label for e in job.seed_set if e.id == g.provenance["source_id"])
                   for g in generated)  # the same label as the seed example it came from
    # the training set is cumulative: seed, then seed + round 1, then seed + rounds 1 and 2
    added = [[g.example.id for g in job.generated[i][0]] for i in (1, 2)]
    assert job.trained[1][1] == seed_ids + added[0] and job.trained[2][1] == seed_ids + added[0] + added[1]
    # a seed example still wrong in round 2 gets a new sample, not its round-1 example again
    assert not set(added[0]) & set(added[1])
    assert {g.example.prompt for g in job.generated[1][0]}.isdisjoint(
        {g.example.prompt for g in job.generated[2][0]}
    )


def test_the_gsm8k_teacher_prompt_is_the_authors_verbatim(tmp_path, data_dir):
    """The messages sent for a wrong GSM8K seed example, against the authors' source text
    (tests/data/llm2llm_gsm8k_prompt.json: GSM8K/prompt_gsm.txt and GSM8K/generate_data.py)."""
    source = json.loads((Path(__file__).parent / "data" / "llm2llm_gsm8k_prompt.json").read_text())
    strategy, job = job_for(tmp_path, data_dir, "strategy=llm2llm", task="gsm8k", seed_size=5)
    seed = job.seed_set[0]
    request = strategy.request(NEW_EXAMPLE, job.task, seed)
    question, answer = seed.record["question"], seed.record["answer"]
    assert [m["role"] for m in request.messages] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in request.messages] == [
        source["prompt_gsm_txt"] + "\n",  # encode_prompt adds a newline to the file's text
        source["example"],
        source["prompt_response"],
        source["prompt_template"].format(question=question, answer=answer, num_aug=1),
    ]
    # the 3-line output format and the 8 numbered requirements each keep their own line
    system = request.messages[0]["content"]
    assert "\n1. Question: [QUESTION]\nAnswer: [CALCULATION]\n#### [ANSWER]\n" in system
    assert all(f"\n{n}. " in system for n in range(1, 9))


def test_a_classification_prompt_shows_a_worked_example_from_the_tasks_own_seed_set(tmp_path, data_dir):
    strategy, job = job_for(tmp_path, data_dir, "strategy=llm2llm", "strategy.iterations=2")
    strategy.run(job)
    shown, written = strategy.worked_example
    assert shown.label == written.label and {shown.id, written.id} <= {e.id for e in job.seed_set}
    wrong = job.seed_set[0]
    request = strategy.request(NEW_EXAMPLE, job.task, wrong)
    system, example_user, example_reply, user = (m["content"] for m in request.messages)
    assert system.endswith("Use this format:\n1. Text: <the new example>\nLabel: <the label>")
    assert example_user == f"Text: {question_of(shown, job.task)}\nLabel: {shown.label}"
    assert example_reply == f"1. Text: {question_of(written, job.task)}\nLabel: {written.label}"
    assert user == f"Text: {question_of(wrong, job.task)}\nLabel: {wrong.label}"


def test_one_line_replies_are_read(tmp_path, data_dir):
    def one_line(request):
        return f"1. Text: What does the code {request.source['id']} mean ? Label: {request.source['label']}"

    strategy, job = job_for(tmp_path, data_dir, "strategy=llm2llm", "strategy.iterations=2",
                            teacher=Scripted(one_line))
    strategy.run(job)
    generated, counts = job.generated[1]
    assert counts["added"] == 5 and "unparseable" not in counts  # all 5 one-line replies read
    assert all(g.example.prompt.startswith("What does the code") and "Label" not in g.example.prompt
               for g in generated)


def test_llm2llm_ablations(tmp_path, data_dir):
    strategy, job = job_for(
        tmp_path,
        data_dir,
        "strategy=llm2llm",
        "strategy.iterations=3",
        "strategy.continue_training=true",
        "strategy.augment_synthetic=true",
        wrong=lambda scored, it: {e.id for e in scored[:1] + [e for e in scored if e.id.startswith("gen-")]},
    )
    strategy.run(job)
    assert [t[2] for t in job.trained] == [None, "stage-0", "stage-1"]  # continued training
    assert [t[3] for t in job.trained] == [True, True, False]  # weights kept for the next stage only
    round_two_sources = {g.provenance["source_id"] for g in job.generated[2][0]}
    assert any(source.startswith("gen-1-") for source in round_two_sources)  # synthetic examples augmented

    one_shot, job = job_for(tmp_path / "one", data_dir, "strategy=llm2llm", "strategy.one_shot=true",
                            "strategy.one_shot_examples=12")
    one_shot.run(job)
    assert [t[0] for t in job.trained] == [0, 1] and job.generated[1][1]["requested"] == 12

    # the preset's form: as many as the paired iterative cell generated, cycling over the 5 wrong examples
    one_shot, job = job_for(
        tmp_path / "preset", data_dir, "strategy=llm2llm_one_shot", "strategy.iterations=4"
    )
    one_shot.run(job)
    assert [t[0] for t in job.trained] == [0, 1] and job.generated[1][1]["requested"] == 9
    [iterative] = job.paired  # the cell it pairs with: these settings, iterative, no ablation
    assert type(iterative) is type(one_shot) and not iterative.one_shot and iterative.iterations == 4
    assert iterative.prompts == one_shot.prompts


def test_a_record_of_the_store_ran_a_strategy_when_it_builds_to_it(tmp_path):
    """The one-shot ablation's pairing by settings: the iterative cell's record, as the store keeps it
    (the effective config through JSON), builds to the ablation's settings without its flag; another
    setting, another class, or a record this version can't read do not."""
    from dataclasses import replace

    from omegaconf import OmegaConf

    from bench.strategies import ran_as
    from runners.inputs import effective

    def stored(*overrides):
        cfg = effective(compose_config(*overrides, f"cache_path={tmp_path}/c.sqlite"))
        return json.loads(json.dumps(OmegaConf.to_container(cfg.strategy, resolve=True)))

    one_shot = build_strategy(compose_config("strategy=llm2llm_one_shot", "strategy.iterations=4").strategy)
    iterative = replace(one_shot, one_shot=False)
    assert ran_as(stored("strategy=llm2llm", "strategy.iterations=4"), iterative)
    assert not ran_as(stored("strategy=llm2llm", "strategy.iterations=3"), iterative)
    assert not ran_as(stored("strategy=llm2llm", "strategy.iterations=4", "strategy.retries=1"), iterative)
    assert not ran_as(stored("strategy=llm2llm_one_shot", "strategy.iterations=4"), iterative)
    assert not ran_as(stored("strategy=finetune"), iterative)
    assert not ran_as({**stored("strategy=llm2llm", "strategy.iterations=4"), "self_check": True}, iterative)


def copy_then_fresh(copies: int):
    """A teacher that answers a request's first `copies` attempts with the seed question itself (a near
    duplicate), then with a question of its own."""
    def reply(request):
        attempt = request.sample_index // RETRY_STRIDE
        question = request.source["question"] if attempt < copies else \
            f"What is the code {request.source['id']} {attempt} ?"
        return f"1. Text: {question}\nLabel: {request.source['label']}"
    return Scripted(reply)


def test_a_filtered_request_is_asked_again_until_its_wrong_example_has_its_example(tmp_path, data_dir):
    strategy, job = job_for(tmp_path, data_dir, "strategy=llm2llm", "strategy.iterations=2",
                            teacher=copy_then_fresh(copies=2))
    strategy.run(job)
    generated, counts = job.generated[1]
    # 5 wrong seed examples: two near-duplicate replies each, then a kept one
    assert counts["requested"] == 5 and counts["near_duplicate"] == 10 and counts["retried"] == 10
    assert counts["added"] == 5 and "unanswered_after_retries" not in counts
    assert [g.provenance["source_id"] for g in generated] == [e.id for e in job.seed_set[:5]]

    capped, job = job_for(tmp_path / "capped", data_dir, "strategy=llm2llm", "strategy.iterations=2",
                          "strategy.retries=1", teacher=copy_then_fresh(copies=5))
    capped.run(job)
    counts = job.generated[1][1]
    assert counts["near_duplicate"] == 10 and counts["added"] == 0 and counts["unanswered_after_retries"] == 5


def test_near_duplicates_are_judged_against_this_rounds_wrong_examples_as_the_authors_did(tmp_path, data_dir):
    """A new question copying a seed example the student got right is kept (the authors' pool: the
    round's wrong seed questions and its generated ones); near_duplicates_of=training drops it."""
    def copy_a_right_example(request):
        return f"1. Text: {question_of(job.seed_set[50], job.task)}\nLabel: {request.source['label']}"

    kept = {}
    for scope in ("round", "training"):
        strategy, job = job_for(tmp_path / scope, data_dir, "strategy=llm2llm", "strategy.iterations=2",
                                "strategy.retries=0", f"strategy.near_duplicates_of={scope}",
                                teacher=Scripted(copy_a_right_example))
        strategy.run(job)
        kept[scope] = job.generated[1][1]["added"]
    assert kept == {"round": 1, "training": 0}  # the first copy kept; its later copies are near duplicates


def test_decontamination_catches_a_planted_test_question(tmp_path, data_dir):
    planted = {}

    def replies(request):
        data = job.task
        question = (
            question_of(data.test[len(planted) % 3], data) if len(planted) < 3 else "How far is the moon ?"
        )
        planted[len(planted)] = question
        return f"1. Text: {question}\nLabel: {request.source['label']}"

    strategy, job = job_for(tmp_path, data_dir, "strategy=llm2llm", "strategy.iterations=2",
                            "strategy.retries=0", "strategy.filters.near_duplicate_rouge_l=null",
                            teacher=Scripted(replies))
    strategy.run(job)
    generated, counts = job.generated[1]
    assert counts["contaminated"] == 3 and counts["added"] == 2
    test_prompts = {e.prompt for e in job.task.test}
    assert not any(g.example.prompt in test_prompts for g in generated)


def test_invalid_replies_are_dropped_and_counted(tmp_path, data_dir):
    def other(label):
        return next(x for x in ("HUM", "LOC") if x != label)

    bad = iter([
        lambda label: "no format at all",
        lambda label: "1. Text: a question ?\nLabel: WEATHER",
        lambda label: f"1. Text: what is love ?\nLabel: {label}",
        lambda label: f"1. Text: who won ?\nLabel: {other(label)}",  # a label of the set, not the one asked
        lambda label: f"Text: where is Rome ?\nLabel: {label}",
    ])
    strategy, job = job_for(tmp_path, data_dir, "strategy=llm2llm", "strategy.iterations=2",
                            "strategy.retries=0", teacher=Scripted(lambda r: next(bad)(r.source["label"])))
    strategy.run(job)
    generated, counts = job.generated[1]
    assert counts["unparseable"] == 1 and counts["label_outside_set"] == 1 and counts["other_label"] == 1
    assert counts["added"] == 2
    assert all(g.example.label == next(e.label for e in job.seed_set if e.id == g.provenance["source_id"])
               for g in generated)  # only the label each request asked for

    answers = iter(
        ["1. Question: What is 2+2?\nAnswer: 2+2=4", "1. Question: What is 3+3?\nAnswer: 3+3=6\n#### 6"]
    )
    strategy, job = job_for(
        tmp_path / "m",
        data_dir,
        "strategy=llm2llm",
        "strategy.iterations=2",
        task="gsm8k",
        seed_size=20,
        teacher=Scripted(lambda r: next(answers, "nonsense")),
        wrong=lambda scored, it: {e.id for e in scored[:2]},
    )
    strategy.run(job)
    generated, counts = job.generated[1]
    assert counts["no_final_number"] == 1 and counts["added"] == 1
    assert generated[0].example.label == "6" and generated[0].example.target.endswith("#### 6")


# -- the budgeted strategies ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy, ratio, count_augmenter, roles", [
    ("answer_augmentation", 2.5, True, {"teacher"}),
    ("question_rephrase", 2.01, True, {"augmenter", "teacher"}),  # Q = 201: odd, one query left over
    ("new_question", 2.0, True, {"augmenter", "teacher"}),
    ("new_question", 0.5, False, {"teacher"}),  # Q counts teacher answers only
])
def test_the_budget_is_used_exactly_and_never_exceeded(
    tmp_path, data_dir, strategy, ratio, count_augmenter, roles
):
    strategy, job = job_for(
        tmp_path,
        data_dir,
        f"strategy={strategy}",
        "budget=ratio",
        f"budget.ratio={ratio}",
        f"budget.count_augmenter={count_augmenter}",
    )
    strategy.run(job)
    budget = job.teacher.budget
    asked = {
        role: line.requests
        for t in {id(job.teacher): job.teacher, id(job.augmenter): job.augmenter}.values()
        for role, line in t.usage.items()
    }
    counted = sum(asked[role] for role in roles)
    assert budget.used == counted == budget.max_queries == round(ratio * 100)
    assert budget.in_flight == 0 and [t[0] for t in job.trained] == [1]
    if count_augmenter is False:
        assert asked["augmenter"] > 0  # asked, reported, not counted against Q


def test_answer_augmentation_spreads_answers_evenly(tmp_path, data_dir):
    strategy, job = job_for(tmp_path, data_dir, "strategy=answer_augmentation", "budget.max_queries=250")
    strategy.run(job)
    generated, _ = job.generated[1]
    per_seed = {}
    for g in generated:
        per_seed[g.provenance["source_id"]] = per_seed.get(g.provenance["source_id"], 0) + 1
    assert sorted(per_seed.values()) == [2] * 50 + [3] * 50
    assert [e.id for e in job.seed_set[:50]] == [s for s in per_seed if per_seed[s] == 3]  # seed order first


def test_a_failing_teacher_never_overruns_the_budget(tmp_path, data_dir):
    calls = []

    def flaky(request):
        calls.append(request)
        return "" if len(calls) % 3 == 0 else "Label: HUM"

    strategy, job = job_for(tmp_path, data_dir, "strategy=answer_augmentation", "budget.max_queries=30",
                            teacher=Scripted(flaky))
    strategy.run(job)
    assert len(calls) == 30 and job.teacher.budget.used == 30  # an empty reply is paid for...
    assert job.generated[1][1]["no_answer"] == 10  # ...but has nothing to use: a failure, never cached
    assert job.teacher.usage["teacher"].faults == {"empty": 10} and len(job.teacher.cache) == 20


@pytest.mark.parametrize("strategy, unparseable", [("answer_augmentation", "label_outside_set"),
                                                    ("new_question", "unparseable_new_question")])
def test_a_cell_none_of_whose_replies_parse_fails_with_the_counts_before_training(tmp_path, data_dir,
                                                                                strategy, unparseable):
    """A model that never writes the format asked for: the cell stops with the parse counts (the
    augmenter's counted apart from the teacher's) rather than record a 'done' cell that added nothing."""
    strategy_, job = job_for(tmp_path, data_dir, f"strategy={strategy}", "budget.max_queries=12",
                             teacher=Scripted(lambda r: "I cannot help with that."))
    drop = unparseable.replace("_", " ")
    with pytest.raises(BenchError, match=rf"none of the \d+ replies to its '\w+' prompt parsed \(.*"
                                         rf"\d+ {drop}.*strategy.allow_unparseable=true"):
        strategy_.run(job)
    assert job.trained == [] and job.generated[1][1][unparseable] > 0
    allowed, job = job_for(tmp_path, data_dir, f"strategy={strategy}", "budget.max_queries=12",
                           "strategy.allow_unparseable=true", teacher=Scripted(lambda r: "I cannot help."))
    allowed.run(job)
    assert job.generated[1][1]["added"] == 0 and len(job.trained) == 1


def test_gold_verification_drops_wrong_answers(tmp_path, data_dir):
    strategy, job = job_for(tmp_path, data_dir, "strategy=answer_augmentation", "strategy.verify=gold",
                            "budget.max_queries=100", "teacher.backend.error_rate=0.3")
    strategy.run(job)
    counts = job.generated[1][1]
    assert 15 < counts["failed_verification"] < 45 and counts["added"] == 100 - counts["failed_verification"]
    labels = {e.id: e.label for e in job.seed_set}
    assert all(g.example.label == labels[g.provenance["source_id"]] for g in job.generated[1][0])


def test_new_questions_are_verified_by_the_agreement_of_k_sampled_answers(tmp_path, data_dir):
    """verify=agreement: 3 teacher answers a new question, kept with the majority's answer; the 3 are
    paid for and counted against Q."""
    def replies(request):
        if request.kind == "new_question":
            return f"Question: What is the code {request.source['id']} {request.sample_index} ?"
        if request.kind == "check":
            return "Yes"
        # the k-th of a question's 3 answers: two agree for odd-numbered seeds, none for the others
        odd = int(request.source["id"].split("-")[1]) % 2
        votes = ["ABBR", "ABBR", "DESC"] if odd else ["ABBR", "HUM", "LOC"]
        return f"Label: {votes[request.sample_index % 3]}"

    strategy, job = job_for(tmp_path, data_dir, "strategy=new_question", "strategy.verify=agreement",
                            "budget.max_queries=50", teacher=Scripted(replies))
    strategy.run(job)
    generated, counts = job.generated[1]
    assert counts["answer_requests"] == 3 * (counts["added"] + counts["no_agreement"])
    assert counts["added"] > 0 and counts["no_agreement"] > 0
    assert all(g.example.label == "ABBR" for g in generated)  # 2 of 3 agreed on it
    assert job.budget.spent <= 50


def test_budgeted_strategies_need_a_budget(tmp_path, data_dir):
    from bench.errors import BenchError

    strategy, job = job_for(tmp_path, data_dir, "strategy=new_question")
    with pytest.raises(BenchError, match="needs a query budget"):
        strategy.run(job)


def test_rouge_l():
    assert rouge_l(words("what is the capital of france"), words("what is the capital of france")) == 1.0
    assert rouge_l(words("a b c d"), words("a x c d")) == pytest.approx(0.75)
    assert rouge_l([], words("a")) == 0.0


# -- end to end, through run.py and the real training path -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["llm2llm", "answer_augmentation", "question_rephrase", "new_question"])
def test_each_strategy_end_to_end(tmp_path, strategy):
    extra = ["strategy.iterations=2"] if strategy == "llm2llm" else ["budget=ratio", "budget.ratio=1"]
    result = run_cli(*QUICK, f"strategy={strategy}", *extra, f"cache_path={tmp_path}/c.sqlite",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    generated = datasets.load_dataset(
        "json", data_files=str(run / "generated" / "iteration_1.jsonl"), split="train"
    )
    assert {"prompt", "target", "label", "strategy", "iteration", "source_id", "written_by", "cache_key"} <= \
        set(generated.column_names)
    usage = json.loads((run / "teacher_usage.json").read_text())
    if strategy == "llm2llm":  # one request per seed example wrong at iteration 0 (and one per retry of a
        # filtered reply), none over a budget
        generation = json.loads((run / "iterations.json").read_text())[1]["generation"]
        assert usage["teacher"]["requests"] == generation["requested"] + generation.get("retried", 0) > 0
    else:  # Q = ratio x |S| = 48, spent exactly: every query of the budget was used, none more
        assert usage["budget"] == [{"max_queries": 48, "paid": 48, "from_cache": 0, "spent": 48}]
    records = (run / "generations.jsonl").read_text().splitlines()
    assert len(records) == sum(line["requests"] + line["cache_hits"] for role, line in usage.items()
                               if role != "budget")


def test_k_answers_to_one_question_are_k_distinct_queries(tmp_path, data_dir):
    """Answer augmentation asks one seed question several times: each is its own sample (own cache key),
    so a rerun does not collapse them into one cached answer."""
    strategy, job = job_for(tmp_path, data_dir, "strategy=answer_augmentation", "budget.max_queries=300")
    strategy.run(job)
    keys = [g.provenance["cache_key"] for g in job.generated[1][0]]
    assert len(keys) == 300 and len(set(keys)) == 300
    rerun, job2 = job_for(tmp_path, data_dir, "strategy=answer_augmentation", "budget.max_queries=300")
    rerun.run(job2)
    assert job2.teacher.usage["teacher"].cache_hits == 300 and job2.teacher.budget.used == 0
    assert [g.record() for g in job2.generated[1][0]] == [g.record() for g in job.generated[1][0]]


def test_rephrased_questions_carry_the_augmenters_provenance(tmp_path, data_dir):
    strategy, job = job_for(tmp_path, data_dir, "strategy=question_rephrase", "budget.max_queries=40")
    strategy.run(job)
    for g in job.generated[1][0]:
        assert (
            g.provenance["question_by"].startswith("simulated:")
            and len(g.provenance["question_cache_key"]) == 64
        )


def test_llm2llm_stops_when_nothing_is_left_to_add(tmp_path, data_dir):
    strategy, job = job_for(
        tmp_path, data_dir, "strategy=llm2llm", "strategy.iterations=5", wrong=lambda scored, it: set()
    )  # the student gets every seed example right
    strategy.run(job)
    assert [t[0] for t in job.trained] == [0] and job.generated[1][1] == {"requested": 0, "added": 0}


def test_left_over_queries_buy_second_answers_not_filtered_duplicates(tmp_path, data_dir):
    strategy, job = job_for(tmp_path, data_dir, "strategy=question_rephrase", "budget.max_queries=41")
    strategy.run(job)
    generated, counts = job.generated[1]
    assert counts["answer_requests"] == counts["added"] == len(generated)
    first = generated[0].example.prompt
    assert sum(g.example.prompt == first for g in generated) == 2  # the 41st query: a second answer to it


def test_lcs_matches_the_table_algorithm():
    import random

    from bench.text import lcs_length

    def table(a, b):
        previous = [0] * (len(b) + 1)
        for x in a:
            current = [0]
            for j, y in enumerate(b):
                current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
            previous = current
        return previous[-1]

    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        assert lcs_length(a, b) == table(a, b)


def test_near_duplicate_filter_on_long_texts(data_dir):
    """CaseHOLD items are ~300 words: 200 candidates against the 662-example training split."""
    from bench.config import FiltersConfig
    from bench.strategies.base import Tally
    from bench.strategies.filters import Filters

    data = load_task(typed_config("task=casehold").task, str(data_dir))
    filters = Filters(data, data.train[:462], FiltersConfig(near_duplicate_rouge_l=0.95))
    admitted = [filters.admit(question_of(e, data), Tally()) for e in data.train[462:]]
    assert sum(admitted) == 200  # real items are not near-copies
    assert not filters.admit(question_of(data.train[0], data), Tally())  # an exact copy is caught


def test_decontamination_catches_a_gsm8k_test_question_inside_a_longer_one(data_dir):
    """The 13-gram window: a test question behind a prefix, and a test question's last 13 words at the
    very end of a new question (the window's last position) are caught; 12 shared words are not."""
    from bench.config import FiltersConfig
    from bench.strategies.base import Tally
    from bench.strategies.filters import Filters
    from bench.text import words

    data = load_task(typed_config("task=gsm8k").task, str(data_dir))
    filters = Filters(data, [], FiltersConfig(decontaminate_ngram=13))
    test_question = question_of(data.test[7], data)
    tail = words(test_question)[-13:]
    assert len(words(test_question)) > 20
    tally = Tally()
    assert not filters.admit(f"Here is a new problem for you. {test_question}", tally)
    assert not filters.admit("A farmer counts his sheep twice and then " + " ".join(tail), tally)
    assert filters.admit("A farmer counts his sheep twice and then " + " ".join(tail[1:]), tally)
    assert tally.counts["contaminated"] == 2


@pytest.mark.parametrize("threshold", [0.95, 0.7])
def test_the_indexed_near_duplicate_filter_decides_as_comparing_every_pair(data_dir, threshold):
    """The prefix-filtered index finds exactly the near duplicates an every-pair comparison finds."""
    from bench.config import FiltersConfig
    from bench.strategies.base import Tally
    from bench.strategies.filters import Filters
    from runners.benchmarks.filters import every_pair_decisions, generated_questions

    data = load_task(typed_config("task=gsm8k").task, str(data_dir))
    pool = [question_of(e, data) for e in data.train[:1500]]
    candidates = generated_questions(pool, 1500, seed=1)
    filters = Filters(data, data.train[:1500], FiltersConfig(near_duplicate_rouge_l=threshold))
    decisions = [filters.admit(question, Tally()) for question in candidates]
    assert decisions == every_pair_decisions(pool, candidates, threshold)
    assert 0 < decisions.count(False) < len(decisions)  # both decisions occur


@pytest.mark.slow
def test_the_one_shot_ablation_generates_what_its_iterative_cell_did_from_the_store(tmp_path):
    """The paper compares one-shot and iterative augmentation at equal data: the one-shot cell takes its
    total from the finished iterative cell in the results store, and refuses to guess without it."""
    cell = [*QUICK, "strategy.iterations=3"]
    alone = run_cli(*cell, "strategy=llm2llm_one_shot", f"hydra.run.dir={tmp_path / 'alone'}", cwd=tmp_path)
    assert alone.returncode == 2 and "run that cell first" in alone.stderr.strip().splitlines()[-1]
    assert (
        run_cli(*cell, "strategy=llm2llm", f"hydra.run.dir={tmp_path / 'iterative'}", cwd=tmp_path).returncode
        == 0
    )
    assert (
        run_cli(
            *cell, "strategy=llm2llm_one_shot", f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path
        ).returncode
        == 0
    )
    iterative = json.loads((tmp_path / "iterative" / "iterations.json").read_text())
    one_shot = json.loads((tmp_path / "one" / "iterations.json").read_text())
    total = sum(i["generation"].get("added", 0) for i in iterative)
    assert total > 0 and [i["iteration"] for i in one_shot] == [0, 1]
    assert one_shot[1]["generation"]["requested"] == total


def test_the_pretraining_corpus_mixes_real_text_at_the_configured_share(tmp_path, data_dir):
    strategy, job = job_for(
        tmp_path,
        data_dir,
        "strategy=synthetic_pretraining",
        "strategy.real_share=0.25",
        "strategy.generations_per_topic=3",
        seed_size=20,
    )
    strategy.run(job)
    corpus = job.trained[0][1]
    real = [i for i in corpus if i.startswith("real-")]
    assert len(corpus) == 80 and len(real) == 20  # 60 synthetic texts: real ones are a quarter of the 80
    seed_ids = {e.id for e in job.seed_set}
    assert not {i.removeprefix("real-") for i in real} & seed_ids  # never the seed set itself
    with pytest.raises(BenchError, match="real_share"):
        job_for(tmp_path / "bad", data_dir, "strategy=synthetic_pretraining", "strategy.real_share=1.0")


def test_the_sft_stage_can_train_on_an_instruction_set(tmp_path, data_dir):
    instructions = tmp_path / "alpaca.jsonl"
    instructions.write_text(
        "".join(
            json.dumps({"instruction": f"Name a colour {i}.", "input": "", "output": f"Blue {i}."}) + "\n"
            for i in range(12)
        )
    )
    sft = (f"{{path: json, data_files: '{instructions}', prompt: '{{{{ instruction }}}}', "
           "target: '{{ output }}', limit: 10}")
    strategy, job = job_for(
        tmp_path, data_dir, "strategy=synthetic_pretraining", f"strategy.sft={sft}", seed_size=20
    )
    strategy.run(job)
    assert job.trained[1][1] == [f"sft-{i}" for i in range(10)]  # SFT on the instruction set, not the seeds
    assert job.trained[1][2] == "stage-0"  # from the pre-trained weights


@pytest.mark.parametrize("keep", [False, True])
def test_a_math_reply_is_cut_after_its_answer_line_as_the_authors_cut_it(data_dir, keep):
    """LLM2LLM's teacher keeps writing after '#### N' (a second numbered problem); the authors keep the
    reply up to that line; strategy.keep_after_answer=true keeps the rest."""
    from bench.strategies.base import Tally

    cfg = compose_config(*QUICK, "task=gsm8k", "strategy=llm2llm", f"strategy.keep_after_answer={keep}")
    strategy = build_strategy(cfg.strategy)
    data = load_task(typed_config("task=gsm8k").task, str(data_dir))
    reply = ("1. Question: Ann has 3 apples and buys 2. How many now?\nAnswer: 3 + 2 = 5\n#### 5\n\n"
             "2. Question: Bob has 4 pears. How many after eating one?\nAnswer: 4 - 1 = 3\n#### 3")
    fields = strategy.parse(NEW_EXAMPLE, data, reply, Tally())
    assert fields["label"] == "5"
    rest = "\n\n2. Question: Bob has 4 pears. How many after eating one?\nAnswer: 4 - 1 = 3\n#### 3"
    assert fields["answer"] == "3 + 2 = 5\n#### 5" + (rest if keep else "")
