"""Structured replies (`teacher.structured=true`): each generation step's schema is read from its reply
format; a server is asked for it with `response_format`, an in-process model keeps to it through a
grammar (xgrammar), the simulated teacher writes it; the reply is read as JSON, validated as any reply;
the schema is part of the cache key."""

import json

import pytest

from bench.errors import BenchError
from bench.steps import ANSWER, CHECK, NEW_EXAMPLE, structured_fields
from bench.strategies import build_strategy
from bench.strategies.base import Tally, source_fields
from bench.tasks import load_task
from bench.teachers import Budget, GenerationCache, Request, Teacher
from bench.teachers.openai import OpenAIBackend
from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import QUICK, compose_config, run_cli, typed_config
from tests.test_real_lm import real_backend, smollm2  # noqa: F401 (fixtures)


def steps_of(task: str, strategy: str) -> tuple:
    cfg = typed_config(f"task={task}")
    return build_strategy(compose_config(f"task={task}", f"strategy={strategy}").strategy), cfg


def test_each_steps_schema_is_read_from_its_reply_format(data_dir):
    strategy, cfg = steps_of("trec", "new_question")
    data = load_task(cfg.task, str(data_dir))
    labels = cfg.task.labels
    answer = json.loads(ANSWER.schema(strategy.template(ANSWER, data), labels))
    assert answer["required"] == ["label"] and answer["properties"]["label"]["enum"] == labels
    check = json.loads(CHECK.schema(strategy.template(CHECK, data), labels))
    assert check["properties"] == {"verdict": {"type": "string", "enum": ["yes", "no"]}}
    llm2llm, _ = steps_of("gsm8k", "llm2llm")
    math = load_task(typed_config("task=gsm8k").task, str(data_dir))
    example = json.loads(NEW_EXAMPLE.schema(llm2llm.template(NEW_EXAMPLE, math), []))
    assert example["required"] == ["question", "answer"] and not example["additionalProperties"]
    assert structured_fields('{"label": " DESC "}') == {"label": "DESC"}
    assert structured_fields("Label: DESC") is None and structured_fields('{"label": 3}') is None
    # another schema is another answer: the schema is part of the cache key
    plain = Request(messages=({"role": "user", "content": "x"},))
    shaped = Request(messages=plain.messages, schema=ANSWER.schema(strategy.template(ANSWER, data), labels))
    assert plain.identity("b", "m") != shaped.identity("b", "m") and "schema" not in plain.identity("b", "m")


def test_a_cell_with_structured_replies_keeps_its_data_and_says_so(tmp_path):
    """The simulated teacher writes each step's JSON; a New Question cell parses every reply as JSON."""
    result = run_cli(*QUICK, "strategy=new_question", "budget.max_queries=30", "teacher.structured=true",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, BENCH_CACHE_DIR=str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["config"]["teacher"]["structured"] is True
    generated = record["iterations"][-1]["generation"]
    assert generated["added"] > 0 and not any(k.startswith("unparseable") for k in generated)
    replies = [json.loads(line)["response"]["text"] for line in (tmp_path / "run" / "generations.jsonl")
               .read_text().splitlines()]
    assert replies and all(isinstance(json.loads(text), dict) for text in replies)


def test_a_server_is_asked_for_the_schema_and_a_refusal_is_one_line(tmp_path, data_dir):
    strategy, cfg = steps_of("trec", "answer_augmentation")
    data = load_task(cfg.task, str(data_dir))
    requests = [strategy.request(ANSWER, data, source_fields(e, data)) for e in data.train[:4]]
    seen = []

    def reply(body):
        seen.append(body)
        return json.dumps({"label": "DESC"})

    with LocalChatServer(reply=reply) as server:
        teacher = Teacher(OpenAIBackend(model="local", base_url=server.base_url, api_key_env=None),
                          GenerationCache(tmp_path / "c.sqlite"), Budget(None), structured=True)
        replies = list(strategy.parsed_replies(teacher, ANSWER, data, requests, "answers", Tally()))
    assert [fields["label"] for _, fields, _ in replies] == ["DESC"] * 4
    shape = seen[0]["response_format"]
    assert shape["type"] == "json_schema" and shape["json_schema"]["schema"]["required"] == ["label"]
    assert "stop" not in seen[0]  # a stop string would cut the JSON short
    with LocalChatServer(faults=["400"] * 8) as server:
        server.error_message = "response_format json_schema is not supported by this model"
        teacher = Teacher(OpenAIBackend(model="local", base_url=server.base_url, api_key_env=None),
                          GenerationCache(tmp_path / "d.sqlite"), Budget(None), structured=True)
        with pytest.raises(BenchError, match="refuses structured outputs .*set teacher.structured=false"):
            list(strategy.parsed_replies(teacher, ANSWER, data, requests, "answers", Tally()))


@pytest.mark.parametrize("task, strategy_name, step", [("trec", "answer_augmentation", ANSWER),
                                                       ("trec", "llm2llm", NEW_EXAMPLE),
                                                       ("trec", "new_question", CHECK)])
def test_the_real_teacher_keeps_every_reply_to_the_schema(real_backend, tmp_path, data_dir, task,  # noqa: F811
                                                          strategy_name, step):
    """SmolLM2-135M through the in-process backend with xgrammar: every reply is the step's JSON, a
    label from the label set (what free text left unparseable or outside the set, here never)."""
    strategy, cfg = steps_of(task, strategy_name)
    strategy.max_tokens = 64
    data = load_task(cfg.task, str(data_dir))
    sources = [{**source_fields(e, data), **data.kind.prompt_fields(e.label)} for e in data.train[:4]]
    requests = [strategy.request(step, data, source, k) for k, source in enumerate(sources)]
    teacher = Teacher(real_backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None), max_concurrency=4,
                      structured=True)
    tally = Tally()
    replies = list(strategy.parsed_replies(teacher, step, data, requests, "structured", tally))
    assert len(replies) == 4, tally.counts
    for _, fields, response in replies:
        assert isinstance(json.loads(response.text), dict)
        assert fields.get("label", "yes") in [*cfg.task.labels, "yes", "no"]


@pytest.mark.slow
def test_a_real_lm_budget_cell_with_structured_replies(smollm2, tmp_path):  # noqa: F811
    """The real teacher in a budgeted cell (tiny budget, tiny student): every answer kept to the schema,
    none dropped for its form, the budget spent exactly, and the record says the replies were structured."""
    result = run_cli(*QUICK, "teacher=smollm2_135m", "teacher.structured=true",
                     "strategy=answer_augmentation", "strategy.max_tokens=32", "budget.max_queries=8",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
                     BENCH_CACHE_DIR=str(tmp_path / "stores"))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    generated = record["iterations"][-1]["generation"]
    assert record["config"]["teacher"]["structured"] is True and record["cost"]["budget"][0]["paid"] == 8
    assert generated["added"] == 8 and not {"unparseable", "label_outside_set"} & set(generated)
