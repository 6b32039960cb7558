"""A teacher behind a real OpenAI-compatible server: `transformers serve` (transformers' own server, the
`serving` extra) on 127.0.0.1 with the real SmolLM2-135M folder, started by the test and stopped by PID.
An LLM2LLM cell and a budgeted cell run with `teacher=openai` against it as a user would point the suite
at vLLM's server; the requests the record counts are the ones the server's access log shows; a model
name the server does not serve, and a server that went away, stop the cell in one line."""

import json
import socket
from pathlib import Path

import pytest

from runners.benchmarks.served import ServerMissing, TransformersServe
from tests.conftest import QUICK, missing, run_cli
from tests.test_real_lm import smollm2  # noqa: F401 (the session's real model folder)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(smollm2, tmp_path_factory):  # noqa: F811
    try:
        with TransformersServe(smollm2, tmp_path_factory.mktemp("serve") / "server.log") as server:
            yield server
    except ServerMissing as why:
        missing(str(why))


def teacher(server: TransformersServe) -> list[str]:
    return ["teacher=openai", f"teacher.backend.base_url={server.base_url}",
            f"teacher.backend.model={server.model}", "teacher.backend.api_key_env=null",
            "teacher.max_concurrency=4", "strategy.max_tokens=64", "logger=none"]


def record_of(run: Path) -> dict:
    return json.loads((run / "record.json").read_text())


@pytest.mark.parametrize("cell", [
    ("strategy=llm2llm_quick", "seed_set.size=16"),
    # a 135M model cannot answer the self-check prompt in its format (measured: 0 of 6 parsed)
    ("strategy=new_question", "budget=ratio", "budget.ratio=1", "seed_set.size=24",
     "strategy.self_check=false"),
])
def test_a_cell_runs_with_a_teacher_behind_transformers_serve(served, tmp_path, cell):
    before = served.chat_requests()
    result = run_cli(*QUICK, *cell, *teacher(served), "train.epochs=0.5", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    record = record_of(tmp_path / "run")
    roles = {role: line for role, line in record["cost"].items() if role != "budget"}
    line = roles["teacher"]
    assert line["requests"] > 0 and line["completion_tokens"] > 0 and line["prompt_tokens"] > 0
    # the requests the record counts, every role's (teacher, augmenter, the probe), are the ones the
    # server's own access log shows it answered: none unseen, none counted twice
    assert served.chat_requests() - before == sum(r["requests"] for r in roles.values()), roles
    assert record["cost"]["budget"][0]["paid"] <= (record["cost"]["budget"][0]["max_queries"] or 10**9)


def test_a_model_the_server_does_not_serve_and_a_server_gone_stop_in_one_line(served, tmp_path):
    wrong = [*teacher(served), "teacher.backend.model=gpt-nope"]
    result = run_cli(*QUICK, "strategy=llm2llm_quick", *wrong, f"hydra.run.dir={tmp_path / 'a'}",
                     cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1 and "gpt-nope" in errors[0], result.stderr[-3000:]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    gone = [*teacher(served), f"teacher.backend.base_url=http://127.0.0.1:{closed}/v1"]
    result = run_cli(*QUICK, "strategy=llm2llm_quick", *gone, f"hydra.run.dir={tmp_path / 'b'}",
                     cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert not list((tmp_path / "stores").glob("stages/*/result.json"))  # stopped before any training
