"""Bad input and faults, as a table: config, secrets, data, teacher, student, store, report and advisor.
Each case runs the real command as a user would and asserts its exit code, one `error:` line naming the
problem and the fix (Hydra's own compose-time message for what Hydra checks: a typo, a wrong type, an
option outside its set), no traceback, and nothing stored as done."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import DATA_DIR, QUICK, REPO

KEY = "sk-planted" + "Q" * 30
REAL_LM_RECORDS = str(REPO / "results" / "real_lm")


def old_cache_with_server_answers(tmp: Path) -> None:
    from tests.test_cache import old_cache

    old_cache(tmp / "old.sqlite", "openai")
TRAIN_CSV = "text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(40))


@dataclass
class Case:
    name: str
    args: list  # after the command; {tmp}, {server} and {conf} are filled in
    expect: str  # a fragment of the error line
    command: str = "run.py"  # or a module: runners.report, runners.advise
    files: dict = field(default_factory=dict)  # relative path under tmp -> content
    env: dict = field(default_factory=dict)
    status: int = 2
    hydra: bool = False  # Hydra's compose-time message (exit 1) instead of our one-line error
    server: list | None = None  # faults of a local OpenAI-compatible server, when the case needs one
    setup: Callable | None = None  # called with the test's folder: what `files` cannot write


def task_yaml(name: str, fmt: str, train: str, test: str, extra: str = "") -> str:
    return (
        f"name: {name}\ncue: 'Label:'\nlabels: [a, b]\n{extra}"
        f"local: {{format: {fmt}, train: '{{tmp}}/{train}', test: '{{tmp}}/{test}'}}\n"
    )


OPENAI = [
    "teacher=openai",
    "teacher.backend.base_url={server}",
    "teacher.max_attempts=2",
    "teacher.backoff_s=0.01",
    "teacher.backend.api_key_env=null",
]
CASES = [
    # -- config: what Hydra checks when it composes ---------------------------------------------------
    Case("unknown task", ["task=nope"], "Could not find 'task/nope'", status=1, hydra=True),
    Case("unknown student", ["student=13b"], "Could not find 'student/13b'", status=1, hydra=True),
    Case("misspelt key", ["train.epoch=3"], "Key 'epoch' not in 'TrainConfig'", status=1, hydra=True),
    Case("wrong type", ["train.epochs=three"], "train.epochs", status=1, hydra=True),
    Case(
        "decoding outside its set",
        ["eval.decoding=sampeld"],
        "expected one of [greedy, sampled]",
        status=1,
        hydra=True,
    ),
    Case(
        "diversity text outside its set",
        ["diversity.text=answers"],
        "expected one of [example, question]",
        status=1,
        hydra=True,
    ),
    Case(
        "W&B mode outside its set",
        ["logger.mode=onlne"],
        "expected one of [auto, online, offline, disabled]",
        status=1,
        hydra=True,
    ),
    # -- config: ranges and settings, checked before anything is written ------------------------------
    Case("no concurrency", ["teacher.max_concurrency=0"], "teacher.max_concurrency=0 must be at least 1"),
    Case("no attempts", ["teacher.max_attempts=0"], "teacher.max_attempts=0 must be at least 1"),
    Case("negative epochs", ["train.epochs=-1"], "train.epochs=-1.0 must be positive"),
    Case("no test examples", ["eval.limit=0"], "eval.limit=0 must be at least 1"),
    Case("negative budget", ["budget.max_queries=-4"], "budget.max_queries=-4 must be at least 0"),
    Case(
        "both budget forms", ["budget.max_queries=5", "budget.ratio=2"], "set one of them, the other to null"
    ),
    Case("empty seed set", ["seed_set.size=0"], "seed_set.size=0 must be a positive number"),
    Case("size and fraction", ["seed_set.size=10", "seed_set.fraction=0.1"], "set one of them"),
    Case(
        "a failure share above 1", ["teacher.max_failure_share=2"], "teacher.max_failure_share=2.0 must be in"
    ),
    Case(
        "misspelt filter",
        ["+strategy.filters.near_duplicate_rouge=0.9"],
        "strategy.filters=['near_duplicate_rouge'] has unknown keys: use decontaminate_ngram, "
        "near_duplicate_rouge_l",
    ),
    Case(
        "filter threshold above 1",
        ["strategy.filters.near_duplicate_rouge_l=1.5"],
        "near_duplicate_rouge_l=1.5 must be in (0, 1] or null",
    ),
    Case("resume outside its set", ["resume=maybe"], "resume=maybe must be true, strict or false"),
    Case(
        "scheduler outside its set",
        ["train.lr_scheduler=cosin"],
        "expected one of [linear, cosine,",
        status=1,
        hydra=True,
    ),
    Case("endless epochs", ["train.epochs=inf"], "train.epochs=inf must be positive and finite"),
    Case(
        "heads that do not divide the hidden size",
        ["student.architecture.num_attention_heads=5"],
        "hidden_size=256 must be a multiple of num_attention_heads=5",
    ),
    Case(
        "LoRA targets the student lacks",
        ["student.lora.enabled=true", "student.lora.target_modules=[c_attn]"],
        "student.lora.target_modules=['c_attn'] does not fit the tiny student",
    ),
    Case("strategy.iterations=abc", ["strategy.iterations=abc"],
         "Value 'abc' of type 'str' could not be converted to Integer", status=1, hydra=True),
    Case("strategy.temperature=hot", ["strategy.temperature=hot"],
         "Value 'hot' of type 'str' could not be converted to Float", status=1, hydra=True),
    Case("a misspelt strategy key", ["strategy.itrations=3"], "Could not override 'strategy.itrations'",
         status=1, hydra=True),
    Case("negative strategy temperature", ["strategy.temperature=-1"], "strategy.temperature=-1.0 must be"),
    Case("no strategy tokens", ["strategy.max_tokens=0"], "strategy.max_tokens=0 must be at least 1"),
    Case(
        "a budget that rounds to no query",
        ["strategy=answer_augmentation", "budget=ratio", "budget.ratio=0.001"],
        "the query budget Q=0",
    ),
    Case(
        "a negative rate limit",
        [*OPENAI, "teacher.backend.requests_per_minute=-5"],
        "teacher.backend.requests_per_minute=-5 must be a positive finite number or null",
    ),
    Case("no timeout", [*OPENAI, "teacher.backend.timeout_s=0"], "teacher.backend.timeout_s=0 must be"),
    Case(
        "an embedding model that is not there",
        ["diversity.embedding_model={tmp}/no-model"],
        "diversity.embedding_model={tmp}/no-model cannot be loaded",
    ),
    Case("budgeted strategy without a budget", ["strategy=answer_augmentation"], "needs a query budget"),
    Case(
        "task YAML without a cue",
        ["task=nocue"],
        "task.cue is required but not set",
        files={"conf/task/nocue.yaml": "name: nocue\nlabels: [a]\nlocal: {format: csv, train: x, test: x}\n"},
    ),
    Case(
        "task YAML syntax error",
        ["task=intents"],
        "intents.yaml:3:23: YAML syntax error",
        files={
            "conf/task/intents.yaml": "name: intents\ncue: 'Intent:'\nlabels: [Is it raining?, weather]\n"
        },
    ),
    Case(
        "task YAML syntax error, planned",
        ["task=intents", "hydra.searchpath=[file://{tmp}/conf]"],
        "intents.yaml:3:23: YAML syntax error",
        command="runners.plan",
        files={
            "conf/task/intents.yaml": "name: intents\ncue: 'Intent:'\nlabels: [Is it raining?, weather]\n"
        },
    ),
    Case(
        "task YAML listing a label twice",
        ["task=twice"],
        "task.labels=['a', 'b', 'a'] lists 'a' more than once",
        files={"conf/task/twice.yaml": task_yaml("twice", "csv", "t.csv", "t.csv").replace("[a, b]",
                                                                                            "[a, b, a]"),
               "t.csv": TRAIN_CSV},
    ),
    Case(
        "task YAML with an empty doc_to_text",
        ["task=empty"],
        "task.doc_to_text='' is empty, so every prompt would be the cue alone",
        files={"conf/task/empty.yaml": task_yaml("empty", "csv", "t.csv", "t.csv", "doc_to_text: ''\n"),
               "t.csv": TRAIN_CSV},
    ),
    Case(
        "task YAML whose doc_to_text renders empty for every record (a misspelt field, defaulted)",
        ["task=blank"],
        "renders empty for every record of the train split",
        files={"conf/task/blank.yaml": task_yaml("blank", "csv", "t.csv", "t.csv",
                                                 "doc_to_text: \"{{ txt | default('') }}\"\n"),
               "t.csv": TRAIN_CSV},
    ),
    Case("fsdp asked of a process alone", ["compute=4gpu_fsdp", "strategy=finetune"],
         "compute.sharding=fsdp shards over compute.processes=4 ranks, but this process is alone: launch it "
         "with torchrun --nproc_per_node 4"),
    Case("processes not a rank per gpu", ["compute.gpus=2", "compute.processes=3"],
         "compute.processes=3 must equal compute.gpus (2)"),
    # -- secrets ------------------------------------------------------------------------------------------
    Case(
        "a key typed as a value",
        [f"+teacher.backend.api_key={KEY}"],
        "teacher.backend.api_key holds an API key",
    ),
    Case(
        "a key where its variable's name belongs",
        ["teacher=openai", f"teacher.backend.api_key_env={KEY}"],
        "teacher.backend.api_key_env holds an API key",
    ),
    Case(
        "the key's variable is unset",
        [*OPENAI[:4], "teacher.backend.api_key_env=MY_UNSET_KEY"],
        "names MY_UNSET_KEY, which is not set",
        server=[],
    ),
    Case(
        "no key file",
        [*OPENAI, "teacher.backend.api_key_file={tmp}/nokey"],
        "api_key_file={tmp}/nokey: no such file",
        server=[],
    ),
    Case(
        "a two-line key file",
        [*OPENAI, "teacher.backend.api_key_file={tmp}/key"],
        "holds 2 non-empty lines",
        files={"key": "sk-one\nsk-two\n"},
        server=[],
    ),
    # -- data -----------------------------------------------------------------------------------------------
    Case(
        "data root without the files", ["data_dir={tmp}"], "data file {tmp}/trec/train_5500.label not found"
    ),
    Case(
        "Hub out of reach",
        ["data_dir=null"],
        "could not load CogComp/trec from the Hub",
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "JSONL line that is not an object",
        ["task=jl"],
        "{tmp}/train.jsonl:2 is a JSON list, not an object",
        files={
            "conf/task/jl.yaml": task_yaml("jl", "jsonl", "train.jsonl", "train.jsonl"),
            "train.jsonl": '{"text": "x", "label": "a"}\n["text", "label"]\n',
        },
    ),
    Case(
        "JSONL syntax error on line 3",
        ["task=jl"],
        "{tmp}/train.jsonl:3 is not JSON",
        files={
            "conf/task/jl.yaml": task_yaml("jl", "jsonl", "train.jsonl", "train.jsonl"),
            "train.jsonl": '{"text": "x", "label": "a"}\n\n{"text": "y", "label": \n',
        },
    ),
    Case(
        "empty test split",
        ["task=csv"],
        "the test split ({tmp}/empty.csv) has no records",
        files={
            "conf/task/csv.yaml": task_yaml("csv", "csv", "train.csv", "empty.csv"),
            "train.csv": TRAIN_CSV,
            "empty.csv": "text,label\n",
        },
    ),
    Case(
        "empty train split, whole-split seed set",
        ["task=csv", "seed_set.size=null"],
        "the train split ({tmp}/empty.csv) has no records",
        files={
            "conf/task/csv.yaml": task_yaml("csv", "csv", "empty.csv", "train.csv"),
            "train.csv": TRAIN_CSV,
            "empty.csv": "text,label\n",
        },
    ),
    Case(
        "label outside the label set",
        ["task=csv"],
        "label 'c' is not in task.labels ['a', 'b']",
        files={
            "conf/task/csv.yaml": task_yaml("csv", "csv", "train.csv", "train.csv"),
            "train.csv": "text,label\nhello,c\n",
        },
    ),
    Case(
        "bytes that are not UTF-8",
        ["task=csv"],
        "{tmp}/latin.csv:3 is not utf-8 (byte 0xe9)",
        files={"conf/task/csv.yaml": task_yaml("csv", "csv", "latin.csv", "latin.csv")},
        setup=lambda tmp: (tmp / "latin.csv").write_bytes(b"text,label\nhello,a\ncaf\xe9,b\n"),
    ),
    Case(
        "a CSV quote never closed",
        ["task=csv"],
        "{tmp}/train.csv:3 opens a quote that is never closed, so its field swallows the 12001 lines",
        files={
            "conf/task/csv.yaml": task_yaml("csv", "csv", "train.csv", "train.csv"),
            "train.csv": 'text,label\nfine,a\n"an unclosed quote,a\n' + "more text,b\n" * 12000,
        },
    ),
    Case(
        "seed set beyond the pool", ["seed_set.size=99999"], "seed_set.size=99999 exceeds the 5442 training"
    ),
    Case(
        "math solution without ####",
        ["task=math"],
        "the solution has no '#### <number>' line",
        files={
            "conf/task/math.yaml": task_yaml("math", "csv", "train.csv", "train.csv", "kind: math\n"),
            "train.csv": "text,label\nwhat is 2+2?,four\n",
        },
    ),
    # -- teacher --------------------------------------------------------------------------------------------
    Case(
        "teacher unreachable",
        [
            "teacher.backend.base_url=http://127.0.0.1:9/v1"
            if a.startswith("teacher.backend.base_url")
            else a
            for a in OPENAI
        ],
        "left 1 of 1 requests without a usable answer after 2 attempts each (connection x2",
    ),
    Case("teacher refuses the key", OPENAI, "refused the API key (401)", server=["401"]),
    Case(
        "teacher answers 500 only",
        OPENAI,
        "left 1 of 1 requests without a usable answer after 2 attempts each (500 x2",
        server=["500"] * 2,
    ),
    Case(
        "teacher replies with null content",
        [*OPENAI, "strategy=answer_augmentation", "budget.max_queries=4"],
        "left 4 of 4 requests without a usable answer after 2 attempts each (null content x4",
        server=["ok"] + ["null"] * 4,
    ),
    Case(
        "teacher replies nothing that parses",
        [*OPENAI, "strategy=answer_augmentation", "budget.max_queries=4"],
        "none of the 4 replies to its 'answer' prompt parsed (4 answer requests, 4 label outside set)",
        server=[],
    ),
    Case(
        "replay without a recording",
        ["teacher=replay", "teacher.backend.records={tmp}/none.jsonl"],
        "no generation records at {tmp}/none.jsonl",
    ),
    Case(
        "garbled replay file",
        ["teacher=replay", "teacher.backend.records={tmp}/g.jsonl"],
        "{tmp}/g.jsonl:1 is not a generation record",
        files={"g.jsonl": "{not json\n"},
    ),
    # -- student --------------------------------------------------------------------------------------------
    Case(
        "empty checkpoint folder",
        ["student.pretrained={tmp}/model"],
        "cannot load {tmp}/model",
        files={"model/.keep": ""},
    ),
    Case(
        "checkpoint that does not exist",
        ["student.pretrained={tmp}/no-such-model"],
        "HF_TOKEN for gated models",
    ),
    # -- store ----------------------------------------------------------------------------------------------
    Case(
        "store folder under a file",
        ["store_dir={tmp}/file/store"],
        "store_dir={tmp}/file/store/cells is not a writable",
        files={"file": "x"},
    ),
    Case(
        "cache under a file",
        ["cache_path={tmp}/file/c.sqlite"],
        "cannot create the generation cache",
        files={"file": "x"},
    ),
    Case(
        "a file where the store's cells go",
        ["store_dir={tmp}/s"],
        "store_dir={tmp}/s/cells is not a writable folder",
        files={"s/cells": "x"},
    ),
    Case(
        "a folder where the cache goes",
        ["cache_path={tmp}/c.sqlite"],
        "cannot create the generation cache {tmp}/c.sqlite (a folder is in its place)",
        files={"c.sqlite/.keep": ""},
    ),
    Case(
        "a cache with server answers keyed without the server",
        ["cache_path={tmp}/old.sqlite"],
        "holds 1 answers from servers, keyed without the server's URL",
        setup=old_cache_with_server_answers,
    ),
    Case(
        "corrupt generation cache",
        ["cache_path={tmp}/bad.sqlite"],
        "the generation cache {tmp}/bad.sqlite cannot be read (file is not a database); move it aside",
        files={"bad.sqlite": "garbage " * 200},
    ),
    # -- report ---------------------------------------------------------------------------------------------
    Case(
        "report of an empty folder",
        ["{tmp}/empty"],
        "no cell records under {tmp}/empty",
        command="runners.report",
        files={"empty/.keep": ""},
    ),
    Case(
        "report of records without config",
        ["{tmp}/sweep"],
        "no cell records under {tmp}/sweep",
        command="runners.report",
        files={"sweep/0/record.json": json.dumps({"cell_id": "0" * 16, "status": "done"})},
    ),
    Case(
        "report into a folder under a file",
        [REAL_LM_RECORDS, "--out", "{tmp}/file/out"],
        "--out={tmp}/file/out is not a writable folder",
        command="runners.report",
        files={"file": "x"},
    ),
    Case(
        "report where a folder is in report.md's place",
        [REAL_LM_RECORDS, "--out", "{tmp}/out"],
        "cannot write the report in {tmp}/out (Is a directory: {tmp}/out/report.md)",
        command="runners.report",
        files={"out/report.md/.keep": ""},
    ),
    Case(
        "report of several sweeps without --out",
        [REAL_LM_RECORDS, REAL_LM_RECORDS],
        "several sweeps report into one folder: name it with --out DIR",
        command="runners.report",
    ),
    Case(
        "report of a folder that does not exist",
        ["{tmp}/nowhere"],
        "no cell records under {tmp}/nowhere",
        command="runners.report",
    ),
    Case("replay records that are not text", ["teacher=replay", "teacher.backend.records={tmp}/bin.jsonl"],
         "teacher=replay: cannot read {tmp}/bin.jsonl as UTF-8 JSON lines",
         setup=lambda tmp: (tmp / "bin.jsonl").write_bytes(b"\x00\x01\xff\xfe")),
    Case("an API key missing with teacher.probe=false", ["teacher=openai", "teacher.probe=false"],
         "names OPENAI_API_KEY, which is not set"),  # before training, not after iteration 0
    # -- advisor --------------------------------------------------------------------------------------------
    Case(
        "advise an unknown task",
        ["task=nope", "seed_size=100", "budget=10"],
        "task=nope is not a task",
        command="runners.advise",
    ),
    Case(
        "advise ratio=nan",
        ["task=trec", "seed_size=100", "ratio=nan"],
        "positive finite numbers",
        command="runners.advise",
    ),
    Case(
        "advise ratio=inf",
        ["task=trec", "seed_size=100", "ratio=inf"],
        "positive finite numbers",
        command="runners.advise",
    ),
    Case(
        "advise seed_size=0",
        ["task=trec", "seed_size=0", "budget=10"],
        "positive finite numbers",
        command="runners.advise",
    ),
    Case(
        "advise from a store that does not exist",
        ["task=trec", "seed_size=100", "budget=10", "store={tmp}/nowhere"],
        "store={tmp}/nowhere is not a folder",
        command="runners.advise",
    ),
    # -- the other tools ---------------------------------------------------------------------------------
    Case("plan an unknown experiment", ["experiment=nope"], "Could not find 'experiment/nope'",
         command="runners.plan"),
    Case("plan a mistyped value", ["seed_set.size=abc"],
         "'abc' of type 'str' could not be converted to Integer", command="runners.plan"),
    Case("fetch_data with a malformed sources file",
         ["--to", "{tmp}/data", "--sources", "{tmp}/s.yaml", "trec"],
         "--sources {tmp}/s.yaml: while parsing a flow sequence", command="runners.fetch_data",
         files={"s.yaml": "trec: [unclosed\n"}),
    Case("fetch_data with a sources entry of the wrong shape",
         ["--to", "{tmp}/data", "--sources", "{tmp}/s.yaml", "trec"],
         "task trec has neither hub_only nor files with url and sha256", command="runners.fetch_data",
         files={"s.yaml": "trec: 5\n"}),
    Case(
        "advise without a budget",
        ["task=trec", "seed_size=100"],
        "usage: python -m runners.advise",
        command="runners.advise",
    ),
]


def fill(text: str, tmp: Path, server: str) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{server}", server)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path):
    for relative, content in case.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(fill(content, tmp_path, ""))
    if case.setup:
        case.setup(tmp_path)
    stores = tmp_path / "stores"
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    env.update(
        BENCH_DATA_DIR=str(DATA_DIR),
        BENCH_CACHE_DIR=str(stores),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        **case.env,
    )
    with LocalChatServer(faults=case.server) as server:
        args = [fill(a, tmp_path, server.base_url) for a in case.args]
        if case.command == "run.py":
            command = [str(REPO / "run.py"), *QUICK, *args, f"hydra.run.dir={tmp_path / 'run'}"]
            if (tmp_path / "conf").is_dir():
                command.append(f"hydra.searchpath=[file://{tmp_path / 'conf'}]")
        else:
            command = ["-m", case.command, *args]
        result = subprocess.run(
            [sys.executable, *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    expected = fill(case.expect, tmp_path, "")
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == case.status, result.stderr[-3000:]
    if case.hydra:
        assert expected in result.stderr, result.stderr[-3000:]
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert KEY not in result.stdout + result.stderr
    assert not list(stores.glob("cells/*.json")), "a failed cell was stored as done"
    assert not list(stores.glob("stages/*/result.json")), "it failed only after training"
    assert not list(tmp_path.rglob("*.partial")), "a half-written file was left behind"
    record = tmp_path / "run" / "record.json"
    if record.is_file():  # a cell that got as far as its run folder says it failed
        assert json.loads(record.read_text())["status"] == "failed"


def test_the_table_is_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def test_a_crafted_cell_id_never_names_a_file_outside_the_report(tmp_path):
    """`--out` copies records by id: an id that is not a digest (here a path) is left out."""
    from bench.store import digest

    good = {
        "cell_id": digest("good"),
        "status": "done",
        "config": {
            "task": {"name": "trec"},
            "student": {"name": "tiny"},
            "teacher": {"name": "simulated"},
            "seed_set": {"seed": 0},
        },
        "metrics": {"final/test_acc": 0.5, "final/test_acc_stderr": 0.1},
        "strategy": "finetune",
        "family": "finetune",
        "seed_set_size": 10,
        "stages": {"trained": 1, "reused": 0},
        "overrides": [],
        "run_dir": "x",
    }
    evil = {**good, "cell_id": "../../evil"}
    for i, record in enumerate((good, evil)):
        (tmp_path / "sweep" / str(i)).mkdir(parents=True)
        (tmp_path / "sweep" / str(i) / "record.json").write_text(json.dumps(record))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.report",
            str(tmp_path / "sweep"),
            "--out",
            str(tmp_path / "out" / "report"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "its cell_id is not a cell id" in result.stderr
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")}
    assert written == {
        "sweep/0/record.json",
        "sweep/1/record.json",
        f"out/report/records/{good['cell_id']}.json",
    }


def test_an_unreadable_store_entry_is_computed_again(tmp_path):
    """A truncated cells/<id>.json and a truncated stage result: warned about, recomputed, stored whole."""
    from tests.conftest import run_cli

    args = (
        *QUICK,
        "strategy=finetune",
        "logger=none",
        "train.epochs=0.5",
        f"hydra.run.dir={tmp_path / 'first'}",
    )
    stores = tmp_path / "stores"
    assert run_cli(*args, cwd=tmp_path, BENCH_CACHE_DIR=str(stores)).returncode == 0
    [cell] = list(stores.glob("cells/*.json"))
    [stage] = list(stores.glob("stages/*/result.json"))
    first = json.loads(cell.read_text())
    cell.write_text(cell.read_text()[:50])
    stage.write_text("{")
    (stores / "cells" / "orphan.json.123.partial").write_text("half")
    os.utime(stores / "cells" / "orphan.json.123.partial", (0, 0))  # a writer killed long ago
    again = run_cli(
        *args[:-1], f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path, BENCH_CACHE_DIR=str(stores)
    )
    assert again.returncode == 0, again.stderr[-2000:]
    said = again.stdout + again.stderr  # the warnings go through logging (Hydra's console handler)
    assert said.count("cannot be read") == 2 and "treated as missing and computed again" in said
    rerun = json.loads(cell.read_text())
    assert rerun["status"] == "done" and not rerun["skipped"] and rerun["cell_id"] == first["cell_id"]
    assert rerun["metrics"]["final/test_acc"] == first["metrics"]["final/test_acc"]
    assert json.loads(stage.read_text())["test"]["accuracy"] == first["metrics"]["final/test_acc"]
    assert not list(stores.rglob("*.partial"))


TOOLS = ["runners.report", "runners.fetch_data", "runners.fetch_models", "runners.plan", "runners.advise",
         "runners.probe_teacher", "runners.benchmarks.local_server", "runners.benchmarks.teacher_throughput",
         "runners.benchmarks.filters", "runners.benchmarks.real_teacher", "runners.benchmarks.launchers",
         "runners.benchmarks.throughput"]


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_its_own_help(tool, monkeypatch, capsys):
    """`--help` prints the tool's own usage and its whole description (no sentence cut at a line end),
    exit 0. In this process (runpy, as `python -m` runs it): the libraries are imported once."""
    import runpy

    monkeypatch.setattr(sys, "argv", [tool, "--help"])
    try:
        runpy.run_module(tool, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        assert done.code in (0, None), capsys.readouterr().err[-2000:]
    printed = capsys.readouterr().out
    assert tool in printed.replace(" ", "") or tool.split(".")[-1] in printed
    assert "synthbench: which way" not in printed  # not run.py's help
    paragraph = printed.split("\n\n")[1 if printed.startswith("usage") else 0].strip()
    assert paragraph.endswith((".", ":", ")", "`")), paragraph  # the description's first paragraph, whole
