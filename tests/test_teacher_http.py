"""The teacher interface against a real HTTP server on 127.0.0.1 speaking the OpenAI protocol."""

import time

import pytest

from bench.errors import BenchError
from bench.teachers.base import Budget, Request, Teacher
from bench.teachers.cache import GenerationCache
from bench.teachers.openai import OpenAIBackend
from runners.benchmarks.local_server import LocalChatServer


def requests(n: int, role: str = "teacher") -> list:
    return [Request(messages=({"role": "user", "content": f"question {i}"},), role=role) for i in range(n)]


def teacher(server, tmp_path, max_queries=None, **kwargs) -> Teacher:
    backend = OpenAIBackend(
        model="local-model", base_url=server.base_url, timeout_s=kwargs.pop("timeout_s", 5.0)
    )
    return Teacher(backend, GenerationCache(tmp_path / "cache.sqlite"), Budget(max_queries),
                   backoff_s=0.01, **kwargs)


def test_faults_are_survived_counted_and_the_second_run_is_free(tmp_path):
    faults = ["429", "500", "hang", "malformed", "length"]
    with LocalChatServer(faults=faults, hang_s=3.0) as server:
        first = teacher(server, tmp_path, max_concurrency=4, timeout_s=1.0)
        responses = first.generate(requests(20))
        usage = first.usage["teacher"]
        # 20 requests + 4 retries reached the server: 5 were faults, 19 were answered normally
        assert server.served == {"ok": 19, "429": 1, "500": 1, "hang": 1, "malformed": 1, "length": 1}
        assert usage.faults == {"429": 1, "500": 1, "timeout": 1, "malformed": 1, "length": 1}
        assert usage.retries == 4  # each transient fault was retried once and then answered
        # 'length' is paid for but unusable: 19 good answers, 1 None, 20 queries used
        assert sum(r is not None for r in responses) == 19 and usage.failed == 1
        assert usage.requests == 20 and first.budget.used == 20 and first.budget.in_flight == 0
        assert responses[0].text == "echo: question 0"

        received = server.received
        second = teacher(server, tmp_path)
        again = second.generate(requests(20))
        assert server.received == received  # nothing reached the server
        assert second.usage["teacher"].cache_hits == 20 and second.usage["teacher"].requests == 0
        assert [r and r.text for r in again] == [r and r.text for r in responses]


def test_the_budget_is_a_hard_cap_under_concurrency(tmp_path):
    with LocalChatServer(latency_s=0.02) as server:
        capped = teacher(server, tmp_path, max_queries=7, max_concurrency=64)
        responses = capped.generate(requests(50, role="augmenter"))
        assert server.received == 7
        assert sum(r is not None for r in responses) == 7
        assert capped.usage["augmenter"].over_budget == 43


def test_failed_requests_give_their_budget_back(tmp_path):
    with LocalChatServer(faults=["500"] * 3) as server:
        strict = teacher(server, tmp_path, max_queries=2, max_attempts=1)
        responses = strict.generate(requests(5))
        # three unpaid 500s freed their slots: two answers, the whole budget, nothing over it
        assert sum(r is not None for r in responses) == 2 and strict.budget.used == 2
        assert strict.usage["teacher"].failed == 3


def test_changed_sampling_parameters_miss_the_cache_but_samples_stay_distinct(tmp_path):
    with LocalChatServer() as server:
        t = teacher(server, tmp_path)
        base = Request(messages=({"role": "user", "content": "q"},))
        t.generate([base, Request(base.messages, sample_index=1), Request(base.messages, temperature=0.5)])
        assert server.received == 3
        t.generate([base])
        assert server.received == 3


def test_api_key_travels_only_in_the_header(tmp_path, monkeypatch):
    secret = "sk-test-" + "x" * 32
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with LocalChatServer() as server:
        t = teacher(server, tmp_path)
        t.generate(requests(2))
        assert server.authorization == [f"Bearer {secret}"] * 2
    assert secret not in repr(t.backend)
    assert secret.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_a_refused_key_stops_with_one_line(tmp_path):
    with LocalChatServer(faults=["401"]) as server, pytest.raises(BenchError, match="refused the API key"):
        teacher(server, tmp_path).generate(requests(1))


def test_requests_per_minute_limit_paces_the_requests(tmp_path):
    with LocalChatServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, requests_per_minute=1200)  # 20 a second
        paced = Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None), max_concurrency=64)
        started = time.perf_counter()
        paced.generate(requests(30))
        elapsed = time.perf_counter() - started
    assert 0.45 < elapsed < 3.0  # 20 at once (one second's allowance), then 10 more at 20 a second


def test_tokens_per_minute_limit_paces_the_requests(tmp_path):
    with LocalChatServer() as server:
        # each request is estimated at 2 prompt tokens + 50 completion tokens: 52 of 1,560 a second
        backend = OpenAIBackend(model="m", base_url=server.base_url, tokens_per_minute=60 * 52 * 20)
        paced = Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None), max_concurrency=64)
        started = time.perf_counter()
        paced.generate(
            [Request(messages=({"role": "user", "content": f"q{i}"},), max_tokens=50) for i in range(30)]
        )
        elapsed = time.perf_counter() - started
    assert 0.35 < elapsed < 3.0


def test_api_key_from_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "key").write_text("sk-from-file\n")
    with LocalChatServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_file=str(tmp_path / "key"))
        Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None)).generate(requests(1))
        assert server.authorization == ["Bearer sk-from-file"]
