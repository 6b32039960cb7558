"""Faults end to end, against the real local OpenAI-compatible server (runners/benchmarks/local_server.py)
in the test's process, with `python run.py -m` as a user runs it:

- a multirun killed with SIGKILL at several points resumes to the uninterrupted result, paying no teacher
  request twice (counted where it is paid: at the server), leaving no unreadable file;
- a fault soak (30% of requests answered with 429, 500, a hang past the timeout, malformed JSON or a
  truncation) over a 3-cell grid: every cell finishes, the budget holds (server-side count), and every
  fault the server served is counted in the records;
- API keys planted four ways reach the server's Authorization header and no file the runs write."""

import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.store import find_records
from bench.teachers.teacher import PROBE_PROMPT
from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import DATA_DIR, QUICK, REPO

pytestmark = pytest.mark.slow


def teacher_reply(body: dict) -> str:
    """One reply both prompts parse: LLM2LLM's new example (Text/Label) of the label it asks for, and an
    answer (Label); a question unique to the request, so no filter drops it."""
    seed = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:10]
    asked = re.search(r"the same label \((\w+)\)", body["messages"][0]["content"])
    return f"1. Text: What does the code {seed} stand for ?\nLabel: {asked.group(1) if asked else 'ABBR'}"


def command(server: LocalChatServer, sweep_dir: Path, *extra: str) -> list:
    return [
        sys.executable,
        str(REPO / "run.py"),
        "-m",
        *QUICK,
        "teacher=openai",
        f"teacher.backend.base_url={server.base_url}",
        "teacher.backend.api_key_env=null",
        "teacher.backend.model=local",
        "teacher.backoff_s=0.01",
        "teacher.max_backoff_s=0.05",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def environment(stores: Path) -> dict:
    return {
        **os.environ,
        "BENCH_DATA_DIR": str(DATA_DIR),
        "BENCH_CACHE_DIR": str(stores),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }


def run_sweep(server: LocalChatServer, sweep_dir: Path, stores: Path, *args: str) -> None:
    """A multirun that must finish."""
    result = subprocess.run(command(server, sweep_dir, *args), cwd=sweep_dir.parent, timeout=900,
                            env=environment(stores), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def paid(server: LocalChatServer) -> int:
    """Requests the server answered (so could bill), the teachers' probes left out."""
    return sum(prompt != PROBE_PROMPT for prompt in server.billable)


def results(sweep_dir: Path) -> dict:
    """Per cell (by strategy: the two servers' addresses differ): what it computed, not when, nor
    whether this run or an earlier one computed it."""
    return {
        r["strategy"]: (
            [(i["iteration"], i["train_examples"], i["test_acc"]) for i in r["iterations"]],
            r["metrics"]["final/test_acc"],
        )
        for r in find_records(sweep_dir)
    }


def every_file_readable(*folders: Path) -> None:
    for folder in folders:
        for path in folder.rglob("*.json"):
            json.loads(path.read_text())
        for path in folder.rglob("*.jsonl"):
            [json.loads(line) for line in path.read_text().splitlines()]


def cached(stores: Path) -> int:
    """Answers committed to the generation cache (read as another process would: its own connection)."""
    path = stores / "generations.sqlite"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
        except sqlite3.OperationalError:  # the run has not made its tables yet
            return 0


GRID = ("strategy=llm2llm_quick,answer_augmentation", "budget=ratio", "budget.ratio=1", "train.epochs=0.5")


def test_a_multirun_killed_anywhere_resumes_to_the_uninterrupted_result_paying_nothing_twice(tmp_path):
    with LocalChatServer(reply=teacher_reply) as server:
        run_sweep(server, tmp_path / "reference", tmp_path / "reference-stores", *GRID)
        paid_uninterrupted = paid(server)
        assert paid_uninterrupted > 0

    stores = tmp_path / "stores"

    def held_after_two(run: Path) -> bool:
        """The probe and two requests answered, the rest held unanswered, and the two answers committed
        to the client's cache: what it has, not how long it might take to get there."""
        return len(server.billable) >= answered_before + 3 and cached(stores) >= cached_before + 2

    # the kill points, in the order a run reaches them: (what is happening, the sign that it is)
    points = [
        ("before generation", lambda run: (run / "0" / "seed_ids.json").exists()),
        ("during generation", held_after_two),
        (
            "after generation, before training",
            lambda run: (run / "0" / "generated" / "iteration_1.jsonl").exists(),
        ),
        ("during training", lambda run: (run / "0" / "iteration_1" / "trainer").exists()),
        ("after training, between cells", lambda run: (run / "1" / "seed_ids.json").exists()),
    ]
    killed_at = []
    with LocalChatServer(reply=teacher_reply) as server:
        for number, (what, reached) in enumerate(points):
            run = tmp_path / f"killed-{number}"
            answered_before, cached_before = len(server.billable), cached(stores)
            if what == "during generation":
                server.hold(3)
            process = subprocess.Popen(
                command(server, run, *GRID),
                cwd=tmp_path,
                env=environment(stores),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + 300
            while not reached(run) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                killed_at.append(what)
            process.wait()
            server.hold(None)
        run_sweep(server, tmp_path / "resumed", stores, *GRID)
        assert len(killed_at) >= 4, killed_at  # the run was really interrupted at (nearly) every point
        assert paid(server) == paid_uninterrupted  # over all the killed runs and the resumed one
    assert results(tmp_path / "resumed") == results(tmp_path / "reference")
    every_file_readable(stores, *tmp_path.glob("killed-*"), tmp_path / "resumed")


def test_ctrl_c_anywhere_says_in_one_line_what_was_kept_and_the_same_command_resumes(tmp_path):
    """SIGINT to the process group, as a terminal sends it: in training, while the teacher is being asked
    and between the cells of a multirun; and SIGTERM, as a scheduler pre-empts a job, in training. Exit
    130, one line and no traceback, nothing half-written."""
    stores = tmp_path / "stores"
    points = [
        ("during training", signal.SIGINT, lambda run: (run / "0" / "iteration_0" / "trainer").exists()),
        ("in teacher requests", signal.SIGINT, lambda run: server.held > held_before),
        ("between cells", signal.SIGINT, lambda run: (run / "0" / "record.json").exists()),
        ("pre-empted in training", signal.SIGTERM,
         lambda run: (run / "1" / "iteration_1" / "trainer").exists()),
    ]
    with LocalChatServer(reply=teacher_reply) as server:
        for number, (what, stop, reached) in enumerate(points):
            run, held_before = tmp_path / f"interrupted-{number}", server.held
            if what == "in teacher requests":
                server.hold(1)  # the probe answered, the teacher's requests held in flight
            process = subprocess.Popen(command(server, run, *GRID), cwd=tmp_path, env=environment(stores),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)
            deadline = time.monotonic() + 300
            while not reached(run) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert reached(run) and process.poll() is None, f"{what}: not reached before the run ended"
            os.killpg(process.pid, stop)
            stderr = process.communicate(timeout=120)[1]
            server.hold(None)
            assert process.returncode == 130, (what, stderr[-3000:])
            assert "Traceback" not in stderr, (what, stderr[-3000:])
            last = stderr.strip().splitlines()[-1]
            assert last.startswith("interrupted: nothing half-written is left") and "run it again" in last
            assert not list(tmp_path.rglob("*.partial")), what
        run_sweep(server, tmp_path / "resumed", stores, *GRID)
    assert all(r["status"] == "done" for r in find_records(tmp_path / "resumed"))
    every_file_readable(stores, *tmp_path.glob("interrupted-*"), tmp_path / "resumed")


def test_a_fault_soak_finishes_every_cell_within_budget_and_counts_every_fault(tmp_path):
    kinds = {"429": "429", "500": "500", "hang": "timeout", "malformed": "malformed", "length": "length"}
    grid = (
        "strategy=answer_augmentation",
        "budget=ratio",
        "budget.ratio=2",
        "seed_set.seed=0,1,2",
        "train.epochs=0.5",
        "teacher.backend.timeout_s=3",  # a hang lasts until the client gives up; an answer takes ms
        "teacher.max_attempts=6",
    )
    with LocalChatServer(reply=teacher_reply, fault_rate=0.3, seed=7) as server:
        run_sweep(server, tmp_path / "soak", tmp_path / "stores", *grid)
        served = {kind: n for kind, n in server.served.items() if kind != "ok"}
        billed, hung_up = paid(server), server.hangs_ended(served.get("hang", 0))
    records = find_records(tmp_path / "soak")
    assert len(records) == 3 and all(r["status"] == "done" for r in records)
    q = 2 * 48
    assert all(b["paid"] <= q for r in records for b in r["cost"]["budget"])
    assert billed <= 3 * q  # the server's own count: never more answered than the three budgets
    assert sum(served.values()) > 0.2 * server.received  # the faults really were served
    counted = {}
    for record in records:
        for role, line in record["cost"].items():
            if role != "budget":
                for kind, n in line["faults"].items():
                    counted[kind] = counted.get(kind, 0) + n
    assert counted == {kinds[kind]: n for kind, n in served.items()}
    assert hung_up == served["hang"]  # each hang ended by its client giving up, as the server saw it


def test_api_keys_planted_four_ways_reach_only_the_server(tmp_path):
    env_key, file_key, typed_key, misplaced_key = (
        f"sk-planted{way}" + "Z" * 30 for way in ("ENV", "FILE", "CLI", "MIS")
    )
    (tmp_path / "key").write_text(file_key + "\n")
    runs = [
        ({"OPENAI_API_KEY": env_key}, []),
        ({}, [f"teacher.backend.api_key_file={tmp_path / 'key'}"]),
        ({}, [f"+teacher.backend.api_key={typed_key}"]),
        ({}, [f"teacher.backend.api_key_env={misplaced_key}"]),
    ]
    with LocalChatServer(reply=teacher_reply) as server:
        outcomes = []
        for number, (env, args) in enumerate(runs):
            base = [
                a
                for a in command(
                    server,
                    tmp_path / f"run-{number}",
                    "strategy=llm2llm_quick",
                    "strategy.iterations=2",
                    "train.epochs=0.5",
                    "logger=wandb",
                )
                if a != "teacher.backend.api_key_env=null" and a != "-m"
            ]
            base = [a.replace("hydra.sweep.dir", "hydra.run.dir") for a in base]
            outcomes.append(
                subprocess.run(
                    base + args,
                    cwd=tmp_path,
                    timeout=600,
                    capture_output=True,
                    text=True,
                    env={**environment(tmp_path / "stores"), **env},
                    check=False,
                )
            )
        assert [o.returncode for o in outcomes] == [0, 0, 2, 2], outcomes[0].stderr[-2000:]
        assert {f"Bearer {env_key}", f"Bearer {file_key}"} == set(server.authorization)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "key"]
    assert any(p.suffix == ".wandb" for p in written) and len(written) > 20
    for key in (env_key, file_key, typed_key, misplaced_key):
        for outcome in outcomes:
            assert key not in outcome.stdout + outcome.stderr
        for path in written:
            assert key.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_no_record_spends_beyond_its_budget_when_answers_come_from_the_cache(tmp_path):
    """A cell whose requests an earlier cell already paid for (a larger budget's, or another replicate's:
    LLM2LLM asks the same sample of a seed example): the cached answers count against the budget too.
    Measured before the fix: max_queries 200, paid 6, from the cache 197, spent 203; here 48 of 24."""
    stores = tmp_path / "stores"
    with LocalChatServer(reply=teacher_reply) as server:
        for ratio, launcher in ((1, "sequential"), (0.5, "parallel")):  # then 2 processes sharing the cache
            run_sweep(server, tmp_path / f"ratio_{ratio}", stores, "strategy=llm2llm_quick", "replicate=0,1",
                      "budget=ratio", f"budget.ratio={ratio}", f"hydra/launcher={launcher}")
        billed = paid(server)
    budgets = {ratio: [b for usage in (tmp_path / f"ratio_{ratio}").rglob("teacher_usage.json")
                       for b in json.loads(usage.read_text())["budget"]] for ratio in (1, 0.5)}
    assert sum(b["from_cache"] for b in budgets[0.5]) > 0  # the smaller budget's cells reused answers
    for ratio, cells in budgets.items():
        assert len(cells) == 2
        for b in cells:
            assert b["spent"] == b["paid"] + b["from_cache"] <= b["max_queries"] == 48 * ratio, b
    assert billed == sum(b["paid"] for cells in budgets.values() for b in cells)
