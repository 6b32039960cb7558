"""The generation cache under real-world faults: answers never served for another server, the cache
where the store says, old files, exactly-once across processes (counted at the server), and replies
validated before they are cached."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from bench.errors import BenchError
from bench.teachers import Budget, Request, Teacher
from bench.teachers.cache import GenerationCache
from bench.teachers.openai import OpenAIBackend
from bench.teachers.replay import ReplayBackend
from runners.benchmarks.local_server import LocalChatServer
from tests.conftest import REPO, typed_config


def requests(*prompts: str) -> list:
    return [Request(messages=({"role": "user", "content": p},), temperature=0.0) for p in prompts]


def teacher(server: LocalChatServer, cache_path, model: str = "gpt-3.5-turbo", **kwargs) -> Teacher:
    backend = OpenAIBackend(model=model, base_url=server.base_url, api_key_env=None)
    return Teacher(backend, GenerationCache(cache_path), Budget(None), backoff_s=0.01, **kwargs)


def test_an_answer_from_one_server_is_never_served_for_another(tmp_path):
    cache = tmp_path / "c.sqlite"
    with LocalChatServer(reply=lambda body: "from the test server") as test_server:
        [answer] = teacher(test_server, cache).generate(requests("q"))
    with LocalChatServer(reply=lambda body: "from the real one") as real:
        [again] = teacher(real, cache).generate(requests("q"))
        assert real.received == 1  # same model name, same prompt: still asked, since the server differs
    assert (answer.text, again.text, again.cached) == ("from the test server", "from the real one", False)


def test_the_cache_lives_in_the_store_unless_cache_path_says_otherwise(tmp_path, monkeypatch):
    assert typed_config(f"store_dir={tmp_path}/a").cache_path == f"{tmp_path}/a/generations.sqlite"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "env"))
    config = typed_config()
    assert (config.store_dir, config.cache_path) == (f"{tmp_path}/env", f"{tmp_path}/env/generations.sqlite")
    assert typed_config(f"cache_path={tmp_path}/c.sqlite").cache_path == f"{tmp_path}/c.sqlite"


def old_cache(path, backend: str) -> None:
    """A cache file as the previous version wrote it: no format version, keys without the endpoint."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE generations (key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT NOT "
               "NULL, created REAL NOT NULL)")
    identity = {"backend": backend, "model": "m", "messages": [{"role": "user", "content": "q"}],
                "temperature": 0.0, "top_p": 1.0, "max_tokens": 512, "sample_index": 0}
    from bench.teachers.cache import cache_key

    db.execute("INSERT INTO generations VALUES (?, ?, ?, 0)",
               (cache_key(identity), json.dumps(identity), json.dumps({"text": "old answer"})))
    db.commit()
    db.close()


def test_an_old_cache_with_server_answers_is_refused_in_one_line_and_a_local_one_keeps_working(tmp_path):
    old_cache(tmp_path / "remote.sqlite", "openai")
    with pytest.raises(BenchError, match=r"holds 1 answers from servers, keyed without the server's URL .*"
                                         r"move it aside \(mv "):
        GenerationCache(tmp_path / "remote.sqlite")
    old_cache(tmp_path / "local.sqlite", "hf")
    cache = GenerationCache(tmp_path / "local.sqlite")
    assert len(cache) == 1 and GenerationCache(tmp_path / "local.sqlite")  # upgraded in place, still read


# a process asking q<first>..q<last-1> through the cache at a path (SQLite) or a URL (PostgreSQL)
CLIENT = """
import sys
from bench.teachers import Budget, Request, Teacher
from bench.teachers.cache import GenerationCache
from bench.teachers.openai import OpenAIBackend
from bench.teachers.postgres_cache import PostgresCache
url, where, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
backend = OpenAIBackend(model="m", base_url=url, api_key_env=None)
cache = PostgresCache(where) if where.startswith("postgresql://") else GenerationCache(where)
teacher = Teacher(backend, cache, Budget(None), max_concurrency=4)
answers = teacher.generate([Request(messages=({"role": "user", "content": f"q{i}"},), temperature=0.0)
                            for i in range(first, last)])
usage = teacher.usage["teacher"]
print(sum(a is not None for a in answers), usage.requests, usage.waited)
"""


def client(server: LocalChatServer, where, first: int, last: int) -> subprocess.Popen:
    arguments = [server.base_url, str(where), str(first), str(last)]
    return subprocess.Popen([sys.executable, "-c", CLIENT, *arguments], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)


def test_two_processes_asking_overlapping_requests_pay_for_each_once(tmp_path):
    """40 + 40 requests sharing 20, asked at once by two processes: 60 reach the server, each once."""
    cache = tmp_path / "shared.sqlite"
    with LocalChatServer(latency_s=0.05) as server:
        a, b = client(server, cache, 0, 40), client(server, cache, 20, 60)
        outputs = [p.communicate(timeout=120)[0].split() for p in (a, b)]
        paid = list(server.billable)
    assert sorted(paid) == sorted(f"q{i}" for i in range(60)), f"{len(paid)} paid, {len(set(paid))} distinct"
    answered, asked, waited = zip(*[map(int, out) for out in outputs])
    assert answered == (40, 40) and sum(asked) == 60  # what one asked, the other took from the cache or
    assert sum(waited) <= 20  # waited for while the first was still asking


def test_a_killed_claimants_requests_are_asked_again(tmp_path):
    cache = tmp_path / "shared.sqlite"
    with LocalChatServer() as server:
        server.hold(0)  # every request hangs: the first process dies holding its claims
        first = client(server, cache, 0, 10)
        deadline = time.time() + 60
        # its 4 requests in flight held by the server too: one still in the server's socket buffer at the
        # kill would be read after the release, answered and billed (as a provider would bill it)
        while time.time() < deadline and (_held(cache) < 10 or server.held < 4):
            time.sleep(0.05)
        assert _held(cache) == 10 and server.held == 4
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        server.hold(None)
        # the claims' leases outlast the test (an hour): only seeing that their process is dead frees them
        db = sqlite3.connect(cache)
        db.execute("UPDATE claims SET expires = ?", (time.time() + 3600,))
        db.commit()
        db.close()
        second = client(server, cache, 0, 10)
        assert second.communicate(timeout=600)[0].split()[:2] == ["10", "10"]
        assert sorted(server.billable) == sorted(f"q{i}" for i in range(10))


def _held(path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_a_claim_from_another_host_is_waited_for_until_its_lease_ends(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.execute("INSERT INTO claims VALUES ('k', 'elsewhere:1:x', ?)", (time.time() + 3600,))
    db.commit()
    assert cache.claim(["k"]) == (set(), {"k"})  # alive on its host, as far as anyone here can tell
    db.execute("UPDATE claims SET expires = ?", (time.time() - 1,))  # its lease ran out, not renewed
    db.commit()
    assert cache.claim(["k"]) == ({"k"}, set())  # so its process is gone: taken over


def test_a_null_reply_is_a_counted_failure_never_cached_and_asked_again_once_the_server_is_fixed(tmp_path):
    cache = tmp_path / "c.sqlite"
    with LocalChatServer(faults=["null", "empty"]) as server:
        broken = teacher(server, cache, max_failure_share=1.0)  # past the share the cell stops: see the table
        assert broken.generate(requests("a", "b")) == [None, None]
    usage = broken.usage["teacher"]
    assert (usage.failed, usage.faults) == (2, {"null content": 1, "empty": 1})
    assert len(GenerationCache(cache)) == 0
    with LocalChatServer() as fixed:
        assert [r.text for r in teacher(fixed, cache).generate(requests("a", "b"))] == ["echo: a", "echo: b"]


def test_a_null_answer_an_older_version_cached_is_asked_again(tmp_path):
    cache = tmp_path / "c.sqlite"
    with LocalChatServer() as server:
        first = teacher(server, cache)
        key = first.generate(requests("a"))[0].key
        GenerationCache(cache).put(key, {}, {"text": None})  # what the crash left behind
        [answer] = teacher(server, cache).generate(requests("a"))
        assert answer.text == "echo: a" and not answer.cached and server.received == 2


@pytest.mark.parametrize("response,kind", [(None, "null content"), ({"text": None}, "null content"),
                                           (["a list"], "malformed"), ({"txt": "x"}, "malformed")])
def test_a_replay_record_without_a_usable_answer_is_a_counted_failure(tmp_path, response, kind):
    [request] = requests("a")
    records = tmp_path / "generations.jsonl"
    records.write_text(json.dumps({"identity": request.identity("openai", "m"), "response": response}) + "\n")
    replay = Teacher(ReplayBackend(str(records)), GenerationCache(tmp_path / "c.sqlite"), Budget(None),
                     max_failure_share=1.0)
    assert replay.generate([request]) == [None]
    assert replay.usage["teacher"].faults == {kind: 1} and len(replay.cache) == 0


def test_redaction_scrubs_a_held_key_whole_or_cut_short_and_a_secret_variable(monkeypatch):
    from bench.secrets import hold, redact

    key = hold("7c1e" * 8)
    assert redact({"said": [f"header was {key}!", f"cut: {key[:20]}"]}) == {
        "said": ["header was [redacted]!", "cut: [redacted]"]}
    monkeypatch.setenv("MY_SERVICE_TOKEN", "plain-words-secret")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long-enough")  # not a secret by its name
    assert redact("plain-words-secret / false-but-long-enough") == "[redacted] / false-but-long-enough"


def test_a_claim_is_renewed_while_its_process_lives(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite", lease_s=0.3)
    mine, _ = cache.claim(["k"])
    db = sqlite3.connect(tmp_path / "c.sqlite")

    def expires() -> float:
        return db.execute("SELECT expires FROM claims WHERE key = 'k'").fetchone()[0]

    first, deadline = expires(), time.monotonic() + 120
    while expires() <= first and time.monotonic() < deadline:  # the heartbeat moves the lease on
        time.sleep(0.05)
    assert expires() > first
    # as another host's live process: its claim with a lease still running
    db.execute("UPDATE claims SET owner = 'elsewhere:1:x', expires = ?", (time.time() + 3600,))
    db.commit()
    assert mine == {"k"} and GenerationCache(tmp_path / "c.sqlite").claim(["k"]) == (set(), {"k"})


def test_processes_opening_a_new_cache_at_once_all_open_it(tmp_path):
    """Eight processes create one cache file at the same moment: each switches it to WAL (SQLite refuses
    the others at once, without waiting its busy timeout; they ask again) and opens it."""
    start = time.time() + 2
    code = ("import sys, time; from bench.teachers.cache import GenerationCache; "
            f"time.sleep(max(0, {start} - time.time())); GenerationCache(sys.argv[1]); print('opened')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "new.sqlite")], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    said = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in said] == ["opened"] * 8, [err[-300:] for _, err in said if err]
