"""Teachers through a provider's Batch API (bench/teachers/batch.py), against a local server that
implements it (runners/benchmarks/batch_server.py): exactly the budget paid, at the discount, nothing
paid twice across a SIGKILL between submitting a job and reading it back (or between its creation and
the id's write), every ending of a job."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.errors import BenchError
from bench.teachers import Budget, Request, Teacher, TeacherFailed
from bench.teachers.cache import GenerationCache, cache_key
from bench.teachers.openai import OpenAIBackend
from runners.benchmarks.batch_server import LocalBatchServer
from tests.conftest import QUICK, REPO, run_cli

PRICES = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}


def batch_teacher(server, cache, max_queries=None, **batch) -> Teacher:
    backend = OpenAIBackend(model="local", base_url=server.base_url, api_key_env=None, mode="batch",
                            batch={"poll_s": 0.01, "poll_max_s": 0.05, **batch})
    return Teacher(backend, cache, Budget(max_queries), prices=PRICES)


def job_key(teacher, requests) -> str:
    """What the batch path stores a job under: the hash of its set of requests' cache keys."""
    keys = sorted(cache_key(teacher.identity(r)) for r in requests)
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()


def asks(n: int, tag: str = "q") -> list:
    return [Request(messages=({"role": "user", "content": f"{tag}{i}"},)) for i in range(n)]


def test_a_job_answers_each_request_once_at_the_discount(tmp_path):
    with LocalBatchServer() as server:
        teacher = batch_teacher(server, GenerationCache(tmp_path / "c.sqlite"), max_queries=6)
        answers = teacher.generate(asks(8))
    assert [a is not None for a in answers] == [True] * 6 + [False] * 2  # the budget: 6 of the 8
    assert len(server.batches) == 1 and len(server.billed) == 6 == len(set(server.billed))
    line = teacher.usage_report()["teacher"]
    assert (line["requests"], line["over_budget"], line["price_factor"]) == (6, 2, 0.5)
    full = line["prompt_tokens"] * 1.0 / 1e6 + line["completion_tokens"] * 2.0 / 1e6
    assert line["cost_usd"] == pytest.approx(full / 2)  # half the list price
    assert server.received == 0  # nothing went live


def test_what_a_job_leaves_unanswered_is_asked_again_and_paid_once(tmp_path):
    """An expired job answers 3 of its 8; the rest go as smaller jobs (or live), each request paid once."""
    with LocalBatchServer(outcome="expired", partial=3) as server:
        answers = batch_teacher(server, GenerationCache(tmp_path / "c.sqlite")).generate(asks(8))
        sizes = [len(b["_lines"]) for b in server.batches.values()]
    assert all(answers) and sizes == [8, 5, 2] and sorted(server.billed) == sorted(set(server.billed))
    with LocalBatchServer(outcome="expired", partial=3) as server:
        teacher = batch_teacher(server, GenerationCache(tmp_path / "d.sqlite"), retry="live")
        answers = teacher.generate(asks(8))
        assert all(answers) and len(server.batches) == 1 and len(server.billed) == 3
        assert server.received == 5  # the 5 the job left, asked live
    with LocalBatchServer(line_faults={2: "500", 5: "500"}) as server:  # per-line errors in the error file
        teacher = batch_teacher(server, GenerationCache(tmp_path / "e.sqlite"))
        answers = teacher.generate(asks(8))
        assert all(answers) and [len(b["_lines"]) for b in server.batches.values()] == [8, 2]
    assert teacher.usage_report()["teacher"]["retries"] == 2


def test_a_job_killed_between_submit_and_download_is_resumed_not_submitted_again(tmp_path):
    """The first run submits its job and is SIGKILLed while the job runs; the rerun polls the same job
    (its id was stored in the cache first) and reads its answers: one job, each request paid once."""
    cache = tmp_path / "c.sqlite"
    script = (
        "import sys; from bench.teachers import Budget, Request, Teacher; "
        "from bench.teachers.cache import GenerationCache; from bench.teachers.openai import OpenAIBackend; "
        "b = OpenAIBackend(model='local', base_url=sys.argv[1], api_key_env=None, mode='batch', "
        "batch={'poll_s': 0.05, 'poll_max_s': 0.1}); "
        "t = Teacher(b, GenerationCache(sys.argv[2]), Budget(None)); "
        "r = t.generate([Request(messages=({'role': 'user', 'content': f'q{i}'},)) for i in range(10)]); "
        "print(sum(x is not None for x in r))")
    with LocalBatchServer() as server:
        server.hold()
        first = subprocess.Popen([sys.executable, "-c", script, server.base_url, str(cache)], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and not server.batches:
            time.sleep(0.05)
        time.sleep(0.3)  # polling the job, in_progress
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert len(server.batches) == 1 and not server.billed
        server.hold(False)
        again = subprocess.run([sys.executable, "-c", script, server.base_url, str(cache)], cwd=REPO,
                               capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, again.stderr[-2000:]
        assert again.stdout.strip() == "10" and len(server.batches) == 1
        assert sorted(server.billed) == sorted(set(server.billed)) and len(server.billed) == 10


class Killed(BaseException):
    """The process dying at that line (nothing after it runs, no handler sees it)."""


def test_a_job_killed_before_its_id_was_stored_is_found_by_its_tag_not_submitted_again(tmp_path):
    """The kill comes between the provider's answer to the job's creation and the id's write: the cache
    holds only the mark that a submission began; the rerun finds the job in the provider's list by its
    tag (a page past a hundred newer jobs) and polls it: one job, each request paid once. A mark whose
    submission never reached the provider lets the rerun submit."""
    path = tmp_path / "c.sqlite"
    with LocalBatchServer() as server:
        cache = GenerationCache(path)
        remember = cache.remember_batch

        def dies_after_the_provider_answered(requests, batch_id):
            if not batch_id.startswith("submitting:"):
                raise Killed
            remember(requests, batch_id)

        cache.remember_batch = dies_after_the_provider_answered
        with pytest.raises(Killed):
            batch_teacher(server, cache).generate(asks(8))
        teacher = batch_teacher(server, GenerationCache(path))
        asked = job_key(teacher, asks(8))
        assert GenerationCache(path).batch_of(asked).startswith("submitting:")
        [tagged] = server.batches.values()
        assert tagged["metadata"] == {"synthbench_requests": asked}
        for n in range(130):  # newer jobs of the same account: the tagged one is on the list's second page
            server.batches[f"batch_other_{n}"] = {**tagged, "id": f"batch_other_{n}", "metadata": {}}
        answers = teacher.generate(asks(8))
        assert all(answers) and len(server.batches) == 131
        assert sorted(server.billed) == sorted(set(server.billed)) and len(server.billed) == 8
    with LocalBatchServer() as server:  # the mark, but the kill came before the job was created
        cache = GenerationCache(tmp_path / "d.sqlite")
        teacher = batch_teacher(server, cache)
        cache.remember_batch(job_key(teacher, asks(3)), f"submitting:{time.time()}")
        assert all(teacher.generate(asks(3))) and len(server.batches) == 1 and len(server.billed) == 3


def test_bad_endings_and_servers_each_say_what_to_do_in_one_line(tmp_path):
    with LocalBatchServer(outcome="failed") as server, \
            pytest.raises(TeacherFailed, match="failed at the server .*line 1: the model does not support"):
        batch_teacher(server, GenerationCache(tmp_path / "a.sqlite")).generate(asks(3))
    assert not server.billed
    with LocalBatchServer(batch_api=False) as server:
        for _ in range(2):  # the refusal leaves no mark of a submission: the rerun is told the same
            with pytest.raises(BenchError, match="has no Batch API .*use teacher.backend.mode=live"):
                batch_teacher(server, GenerationCache(tmp_path / "b.sqlite")).generate(asks(3))
    with LocalBatchServer(max_file_bytes=600) as server:
        with pytest.raises(BenchError, match="lower teacher.backend.batch.max_bytes"):
            batch_teacher(server, GenerationCache(tmp_path / "c.sqlite")).generate(asks(8))
        teacher = batch_teacher(server, GenerationCache(tmp_path / "d.sqlite"), max_bytes=500)
        answers = teacher.generate(asks(8))
        assert all(answers) and len(server.batches) > 1  # split into jobs under the limit
    with LocalBatchServer() as server:  # a stored job the server no longer has
        cache = GenerationCache(tmp_path / "e.sqlite")
        teacher = batch_teacher(server, cache)
        requests = asks(3)
        cache.remember_batch(job_key(teacher, requests), "batch_gone")
        with pytest.raises(BenchError, match="batch batch_gone, which this cache holds .*no longer exists"):
            teacher.generate(requests)
        assert not server.batches  # nothing submitted: it might have run


def test_a_budgeted_grid_through_batch_jobs_pays_exactly_its_budgets(tmp_path):
    """Two answer-augmentation cells (Q = 12 and 20) through the batch path: 20 requests billed in all
    (the second cell's first 12 are the first cell's, from the cache), the ledger at half price."""
    with LocalBatchServer(reply=lambda body: "Label: DESC") as server:
        result = run_cli("-m", *QUICK, "strategy=answer_augmentation", "budget.max_queries=12,20",
                         "teacher=openai", f"teacher.backend.base_url={server.base_url}",
                         "teacher.backend.api_key_env=null", "teacher.backend.mode=batch",
                         "teacher.backend.batch.poll_s=0.01", "teacher.backend.batch.poll_max_s=0.05",
                         "teacher.probe=false",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                         BENCH_CACHE_DIR=str(tmp_path / "stores"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(server.billed) == 20 == len(set(server.billed)) and server.received == 0
    from bench.store import find_records

    records = sorted(find_records(tmp_path / "sweep"), key=lambda r: r["config"]["budget"]["max_queries"])
    assert [r["cost"]["budget"][0]["paid"] for r in records] == [12, 8]
    assert all(r["cost"]["teacher"]["price_factor"] == 0.5 for r in records)
