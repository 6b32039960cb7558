"""Teachers built from the real configs: the simulator on real task data, budget arithmetic, replay,
the in-process transformers backend, and the cache shared between processes."""

import importlib.util
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.errors import BenchError
from bench.seed_set import sample_seed_set
from bench.tasks import load_task, question_of
from bench.teachers import Budget, Request, Teacher, build_teachers, query_budget
from bench.teachers.cache import GenerationCache
from tests.conftest import typed_config


@pytest.fixture(scope="module")
def trec(data_dir):
    cfg = typed_config("task=trec", "seed_set.size=100")
    data = load_task(cfg.task, str(data_dir))
    return cfg, data, sample_seed_set(data.train, cfg.seed_set, "trec")


def simulated(trec, tmp_path, *overrides):
    cfg, data, seed = trec
    cfg = typed_config("task=trec", "seed_set.size=100", f"cache_path={tmp_path}/cache.sqlite", *overrides)
    return build_teachers(cfg, data, [e.id for e in seed])


def source(example, data, **extra):
    return {"id": example.id, "question": question_of(example, data), "target": example.target,
            "label": example.label, **extra}


def ask(kind, example, data, **kwargs):
    return Request(messages=({"role": "user", "content": f"{kind}: {example.prompt}"},), kind=kind,
                   source=source(example, data, **kwargs.pop("extra", {})), **kwargs)


def test_new_examples_are_unused_training_examples_of_the_same_label(trec, tmp_path):
    _, data, seed = trec
    teacher, _ = simulated(trec, tmp_path)
    seed_questions = {question_of(e, data) for e in seed}
    test_questions = {question_of(e, data) for e in data.test}
    by_question = {question_of(e, data): e for e in data.train}
    requests = [ask("new_example", e, data, reply_format="{{ question }} => {{ label }}",
                    extra={"target_label": e.label}) for e in seed[:30]]
    for request, response in zip(requests, teacher.generate(requests)):
        question, label = response.text.split(" => ")
        assert question in by_question and by_question[question].label == label == request.source["label"]
        assert question not in seed_questions and question not in test_questions


def test_k_samples_of_one_prompt_are_k_different_examples(trec, tmp_path):
    _, data, seed = trec
    teacher, _ = simulated(trec, tmp_path)
    answers = teacher.generate([ask("new_example", seed[0], data, sample_index=k) for k in range(5)])
    assert len({a.text for a in answers}) == 5


def test_rephrase_keeps_the_label_and_answer_returns_gold(trec, tmp_path):
    _, data, seed = trec
    teacher, _ = simulated(trec, tmp_path)
    rephrased = teacher.generate([ask("rephrase", e, data, reply_format="{{ question }}|{{ label }}")
                                  for e in seed[:40]])
    assert all(r.text.split("|")[1] == e.label for r, e in zip(rephrased, seed))
    assert sum(r.text.split("|")[0] != question_of(e, data) for r, e in zip(rephrased, seed)) >= 20
    answers = teacher.generate([ask("answer", e, data) for e in seed[:10]])
    assert [a.text for a in answers] == [e.target for e in seed[:10]]


def test_error_rate_makes_wrong_answers_deterministically(trec, tmp_path):
    _, data, seed = trec
    wrong = []
    for run in range(2):
        teacher, _ = simulated(trec, tmp_path / str(run), "teacher.backend.error_rate=0.5")
        answers = teacher.generate([ask("answer", e, data) for e in seed])
        wrong.append([a.text != e.target for a, e in zip(answers, seed)])
    assert wrong[0] == wrong[1] and 25 < sum(wrong[0]) < 75


def test_the_negative_control_pairs_real_text_with_another_labels_example(trec, tmp_path):
    """teacher=shuffled_labels: each new example is real training text of another label, given the label
    asked for; every answer is wrong. The oracle (teacher=oracle) gives the example of the right label."""
    _, data, seed = trec
    by_question = {question_of(e, data): e for e in data.train}
    requests = [ask("new_example", e, data, reply_format="{{ question }} => {{ label }}",
                    extra={"target_label": e.label}) for e in seed[:30]]
    for name, matches in (("oracle", True), ("shuffled_labels", False)):
        teacher, _ = simulated(trec, tmp_path / name, f"teacher={name}")
        for request, response in zip(requests, teacher.generate(requests)):
            question, label = response.text.split(" => ")
            assert label == request.source["label"]  # the label asked for, always
            assert (by_question[question].label == label) is matches
    teacher, _ = simulated(trec, tmp_path / "answers", "teacher=shuffled_labels")
    answers = teacher.generate([ask("answer", e, data) for e in seed[:20]])
    assert all(a.text != e.target for a, e in zip(answers, seed))


def test_gsm8k_simulated_answers_parse(data_dir, tmp_path):
    from bench.task_kinds import extract_number

    cfg = typed_config("task=gsm8k", "seed_set.size=20", f"cache_path={tmp_path}/c.sqlite",
                       "teacher.backend.error_rate=1.0")
    data = load_task(cfg.task, str(data_dir))
    seed = sample_seed_set(data.train, cfg.seed_set, "gsm8k")
    teacher, _ = build_teachers(cfg, data, [e.id for e in seed])
    answers = teacher.generate([ask("answer", e, data) for e in seed])
    for answer, example in zip(answers, seed):  # every answer is wrong, and still well formed
        assert extract_number(answer.text) is not None and str(extract_number(answer.text)) != example.label


@pytest.mark.parametrize("budget, seed_size, queries", [
    ({"max_queries": 50}, 100, 50), ({"ratio": 2.5}, 100, 250), ({"ratio": 0.333}, 100, 33),
    ({"ratio": 1.5}, 7, 10), ({"ratio": 2.01}, 100, 201), ({}, 100, None),
])
def test_query_budget_arithmetic(budget, seed_size, queries):
    from bench.config import BudgetConfig

    assert query_budget(BudgetConfig(**budget), seed_size) == queries


def test_budget_both_forms_is_an_error():
    from bench.config import BudgetConfig

    with pytest.raises(BenchError, match="budget.max_queries=5 and budget.ratio=1.0: set one of them"):
        BudgetConfig(max_queries=5, ratio=1.0)


def test_teacher_and_augmenter_share_one_budget(trec, tmp_path):
    _, data, seed = trec
    teacher, augmenter = simulated(trec, tmp_path, "budget=ratio", "budget.ratio=0.1")  # Q = 10
    augmenter.generate([ask("new_question", e, data, role="augmenter") for e in seed[:6]])
    answers = teacher.generate([ask("answer", e, data) for e in seed[:10]])
    assert sum(a is not None for a in answers) == 4 and teacher.budget.used == 10
    assert teacher.usage["teacher"].over_budget == 6 and augmenter.usage["augmenter"].requests == 6


def test_replay_answers_from_records_and_refuses_a_miss(trec, tmp_path):
    _, data, seed = trec
    teacher, _ = simulated(trec, tmp_path)
    originals = teacher.generate([ask("new_example", e, data) for e in seed[:5]])
    records = tmp_path / "generations.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for r in teacher.records))
    replayed, _ = simulated(trec, tmp_path / "replay", "teacher=replay", f"teacher.backend.records={records}")
    again = replayed.generate([ask("new_example", e, data) for e in seed[:5]])
    assert [a.text for a in again] == [o.text for o in originals]
    with pytest.raises(BenchError, match="has no answer for a new_example request"):
        replayed.generate([ask("new_example", seed[7], data)])


def test_replay_without_records_is_a_one_line_error(trec, tmp_path):
    from bench.config import validated
    from tests.conftest import compose_config

    with pytest.raises(BenchError, match="teacher.backend.records is required"):
        validated(compose_config("teacher=replay"))


def test_hf_backend_generates_from_a_local_checkpoint(tmp_path):
    from bench.students import Student

    texts = ["Who wrote Hamlet ? Shakespeare", "What is the capital of France ? Paris"] * 30
    student = Student(typed_config("student.architecture.num_hidden_layers=1").student, texts)
    student.base_model().save_pretrained(tmp_path / "model")
    student.tokenizer.save_pretrained(tmp_path / "model")
    cfg = typed_config("teacher=hf", f"teacher.backend.model={tmp_path / 'model'}",
                       f"cache_path={tmp_path}/c.sqlite", "teacher.max_concurrency=3")
    teacher, _ = build_teachers(cfg, None, [])
    requests = [Request(messages=({"role": "user", "content": f"question {i}"},), max_tokens=6,
                        temperature=0.0 if i % 2 else 1.0) for i in range(5)]
    answers = teacher.generate(requests)
    usage = teacher.usage["teacher"]
    assert usage.requests == 5 and usage.completion_tokens > 0
    # an untrained model rarely stops within 6 tokens: those answers are 'length' failures, counted
    assert usage.failed == sum(a is None for a in answers) == usage.faults.get("length", 0)


def test_vllm_backend_says_how_to_install_it(tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed: this test checks the message shown without it")
    cfg = typed_config("teacher=vllm", f"cache_path={tmp_path}/c.sqlite")
    with pytest.raises(BenchError, match=r"pip install 'synthbench-llm\[vllm\]'"):
        build_teachers(cfg, None, [])


def _write_rows(path: str, worker: int, count: int) -> None:
    cache = GenerationCache(path)
    for i in range(count):
        cache.put(f"w{worker}-{i}", {"worker": worker}, {"text": f"{worker}/{i}"})


def test_cache_is_shared_by_processes_writing_at_once(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    GenerationCache(path)
    workers = [multiprocessing.get_context("spawn").Process(target=_write_rows, args=(path, w, 100))
               for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    cache = GenerationCache(path)
    assert len(cache) == 400 and cache.get("w3-99") == {"text": "3/99"}


def test_cache_survives_kill_9(tmp_path):
    path = tmp_path / "killed.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys; from bench.teachers.cache import GenerationCache\n"
        f"c = GenerationCache({str(path)!r})\n"
        "for i in range(10**7): c.put(f'k{i}', {}, {'text': str(i)})\n")])
    deadline = time.time() + 30
    while time.time() < deadline and (not path.exists() or len(GenerationCache(path)) < 200):
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    cache = GenerationCache(path)
    rows = len(cache)
    assert rows >= 200
    assert all(cache.get(f"k{i}") == {"text": str(i)} for i in range(rows))  # every committed row intact


def test_a_second_teacher_over_the_same_cache_pays_nothing(tmp_path):
    from bench.teachers import LocalBackend, Response

    class Counting(LocalBackend):
        name, model, calls = "counting", "m", 0

        def complete_batch(self, requests):
            Counting.calls += len(requests)
            return [Response(text=r.messages[0]["content"].upper()) for r in requests]

    requests = [Request(messages=({"role": "user", "content": f"q{i}"},)) for i in range(10)]
    first = Teacher(Counting(), GenerationCache(tmp_path / "c.sqlite"), Budget(None)).generate(requests)
    second = Teacher(Counting(), GenerationCache(tmp_path / "c.sqlite"), Budget(None)).generate(requests)
    assert Counting.calls == 10 and [a.text for a in second] == [a.text for a in first]
    assert all(a.cached for a in second)


def test_prices_turn_tokens_into_dollars(tmp_path):
    from bench.teachers import LocalBackend, Response

    class Fixed(LocalBackend):
        name, model = "fixed", "m"

        def complete_batch(self, requests):
            return [Response(text="ok", prompt_tokens=1000, completion_tokens=500) for _ in requests]

    priced = Teacher(Fixed(), GenerationCache(tmp_path / "c.sqlite"), Budget(None),
                     prices={"input_per_mtok": 0.5, "output_per_mtok": 1.5})
    priced.generate(
        [Request(messages=({"role": "user", "content": f"q{i}"},), role="augmenter") for i in range(4)]
    )
    report = priced.usage_report()["augmenter"]
    assert (report["prompt_tokens"], report["completion_tokens"]) == (4000, 2000)
    assert report["cost_usd"] == pytest.approx(4000 / 1e6 * 0.5 + 2000 / 1e6 * 1.5)


def test_the_budget_holds_at_its_exact_boundary_on_the_local_path(tmp_path):
    """Q + 1 requests to an in-process backend that fails one of them: Q - 1 answers are paid, the failure
    gives its slot back too late to matter within the batch, and exactly one request is refused."""
    from bench.teachers import LocalBackend, Response

    class FailsSecond(LocalBackend):
        name, model, calls = "fails-second", "m", []

        def complete_batch(self, requests):
            FailsSecond.calls += [r.messages[0]["content"] for r in requests]
            return [None if r.messages[0]["content"] == "q1" else Response(text="ok") for r in requests]

    capped = Teacher(FailsSecond(), GenerationCache(tmp_path / "c.sqlite"), Budget(5), max_failure_share=1.0)
    answers = capped.generate([Request(messages=({"role": "user", "content": f"q{i}"},)) for i in range(6)])
    usage = capped.usage["teacher"]
    assert FailsSecond.calls == ["q0", "q1", "q2", "q3", "q4"] and usage.over_budget == 1
    assert sum(a is not None for a in answers) == 4 and capped.budget.used == 4 and usage.failed == 1
    again = capped.generate([Request(messages=({"role": "user", "content": "q5"},))])  # the freed slot
    assert again[0] is not None and capped.budget.used == 5
    assert capped.generate([Request(messages=({"role": "user", "content": "q6"},))]) == [None]
    assert usage.over_budget == 2


def test_answers_from_the_cache_count_against_the_budget_exactly_once(tmp_path):
    """A replicate reusing an earlier one's answers (issue: max_queries 200 recorded spent 203, 197 from the
    cache): cached answers, identical requests of a batch and paid ones each take a slot, so no run spends
    beyond its budget, and a run over a full cache makes the same plan as one that paid."""
    from bench.teachers import LocalBackend, Response

    class Counting(LocalBackend):
        name, model, calls = "counting", "m", 0

        def complete_batch(self, requests):
            Counting.calls += len(requests)
            return [Response(text="ok") for _ in requests]

    def ask(n: int, budget: Budget, first: int = 0) -> tuple[Teacher, list]:
        teacher = Teacher(Counting(), GenerationCache(tmp_path / "c.sqlite"), budget)
        return teacher, teacher.generate([Request(messages=({"role": "user", "content": f"q{i}"},))
                                          for i in range(first, first + n)])

    ask(8, Budget(None))  # an earlier replicate: q0..q7 in the cache
    for cap, batch in ((5, 8), (3, 4), (8, 10)):
        teacher, answers = ask(batch, Budget(cap))
        spent = teacher.budget.spent
        assert spent == sum(a is not None for a in answers) == min(cap, batch), (cap, batch)
        assert teacher.usage["teacher"].over_budget == batch - spent
    # cached and paid in one batch, with a duplicate: q6, q7 cached, q8, q9 paid, q9 again from the batch
    calls = Counting.calls
    teacher = Teacher(Counting(), GenerationCache(tmp_path / "c.sqlite"), Budget(4))
    answers = teacher.generate([Request(messages=({"role": "user", "content": q},))
                                for q in ("q6", "q7", "q8", "q9", "q9")])
    assert teacher.budget.spent <= 4 and Counting.calls - calls <= 2
    assert sum(a is not None for a in answers) == teacher.budget.spent


def test_a_new_generation_step_is_one_line_and_a_prompt(trec, tmp_path, monkeypatch):
    """A step (bench/steps.py) carries who is asked, how the simulator answers and its reply format: a new
    one is added there and in the strategy's prompts, and the strategy and the simulator take it as is."""
    from bench.steps import STEPS, Step
    from bench.strategies import build_strategy
    from bench.strategies.base import Tally
    from tests.conftest import compose_config

    _, data, seed = trec
    headline = Step("headline", "augmenter", "draw", "Headline: {{ question }}")
    monkeypatch.setitem(STEPS, "headline", headline)
    strategy = build_strategy(compose_config("task=trec", "strategy=question_rephrase").strategy)
    strategy.prompts = {**strategy.prompts, "headline": {"classification": {
        "user": "A headline like: {{ question }}", "parse": r"Headline: (?P<question>.+)"}}}
    requests = [strategy.request(headline, data, source(e, data)) for e in seed[:4]]
    assert {r.role for r in requests} == {"augmenter"} and {r.kind for r in requests} == {"headline"}
    _, augmenter = simulated(trec, tmp_path)
    tally = Tally()
    replies = list(strategy.parsed_replies(augmenter, headline, data, requests, "headlines", tally))
    train_questions = {question_of(e, data) for e in data.train} - {question_of(e, data) for e in seed}
    assert len(replies) == 4 and tally.parsed["headline"] == 4
    assert all(fields["question"] in train_questions for _, fields, _ in replies)  # drawn, unused

    with pytest.raises(BenchError, match="no generation step 'nope'"):
        augmenter.backend.complete_batch([ask("nope", seed[0], data)])
