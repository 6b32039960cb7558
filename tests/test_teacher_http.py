"""The teacher interface against a real HTTP server on 127.0.0.1 speaking the OpenAI protocol."""

import asyncio
import itertools
import time

import pytest

from bench.errors import BenchError
from bench.teachers import Budget, Request, Teacher, TeacherFailed
from bench.teachers.cache import GenerationCache
from bench.teachers.openai import OpenAIBackend, RateLimiter
from runners.benchmarks.local_server import LocalChatServer


def requests(n: int, role: str = "teacher") -> list:
    return [Request(messages=({"role": "user", "content": f"question {i}"},), role=role) for i in range(n)]


def teacher(server, tmp_path, max_queries=None, count_timeouts=True, **kwargs) -> Teacher:
    """A keyless local server (api_key_env=None) unless the test names the key's variable."""
    timeout_s, api_key_env = kwargs.pop("timeout_s", 5.0), kwargs.pop("api_key_env", None)
    backend = OpenAIBackend(model="local-model", base_url=server.base_url, timeout_s=timeout_s,
                            api_key_env=api_key_env)
    return Teacher(backend, GenerationCache(tmp_path / "cache.sqlite"), Budget(max_queries, count_timeouts),
                   backoff_s=0.01, **kwargs)


def test_faults_are_survived_counted_and_the_second_run_is_free(tmp_path):
    faults = ["429", "500", "hang", "malformed", "length"]
    with LocalChatServer(faults=faults) as server:
        first = teacher(server, tmp_path, max_concurrency=4, timeout_s=3.0)
        responses = first.generate(requests(20))
        usage = first.usage["teacher"]
        # 20 requests + 4 retries reached the server: 5 were faults, 19 were answered normally
        assert server.served == {"ok": 19, "429": 1, "500": 1, "hang": 1, "malformed": 1, "length": 1}
        assert usage.faults == {"429": 1, "500": 1, "timeout": 1, "malformed": 1, "length": 1}
        assert server.hangs_ended(1) == 1  # the hang was the client giving up, as the server saw it
        assert usage.retries == 4  # each transient fault was retried once and then answered
        # 'length' is paid for but unusable: 19 good answers, 1 None, 20 queries used
        assert sum(r is not None for r in responses) == 19 and usage.failed == 1
        # 20 answers paid, and the attempt that timed out (a server may bill it: budget.count_timeouts)
        assert usage.requests == 20 and first.budget.used == 21 and first.budget.in_flight == 0
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
        strict = teacher(server, tmp_path, max_queries=2, max_attempts=1, max_failure_share=1.0)
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
        t = teacher(server, tmp_path, api_key_env="OPENAI_API_KEY")
        t.generate(requests(2))
        assert server.authorization == [f"Bearer {secret}"] * 2
    assert secret not in repr(t.backend)
    assert secret.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_a_refused_key_stops_with_one_line(tmp_path):
    with LocalChatServer(faults=["401"]) as server, pytest.raises(BenchError, match="refused the API key"):
        teacher(server, tmp_path).generate(requests(1))


def schedule(per_minute: float, amounts: list) -> list:
    """When a RateLimiter lets each request through, on a clock of its own that only its waits move: the
    schedule itself, however fast or loaded the machine."""
    now = [0.0]

    async def wait(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(per_minute, clock=lambda: now[0], sleep=wait)

    async def run() -> list:
        times = []
        for amount in amounts:
            await limiter.acquire(amount)
            times.append(now[0])
        return times

    return asyncio.run(run())


def test_the_rate_limiter_lets_one_seconds_allowance_through_then_paces():
    times = schedule(1200, [1] * 30)  # 20 a second
    assert times[:20] == [0.0] * 20 and times[-1] == pytest.approx(0.5)
    assert [b - a for a, b in itertools.pairwise(times[19:])] == pytest.approx([0.05] * 10)


def test_the_rate_limiter_charges_a_request_above_one_seconds_allowance_all_it_costs():
    """3,000-token requests at 60,000 tokens a minute (1,000 a second): one every 3 s, not one a second."""
    times = schedule(60_000, [3000] * 5)
    assert times == pytest.approx([0, 3, 6, 9, 12])
    assert 4 * 3000 / (times[-1] - times[0]) == pytest.approx(1000)  # tokens a second, once under way
    mixed = schedule(60_000, [3000, 10, 10])  # a small request waits out the large one's debt too
    assert mixed == pytest.approx([0, 2.01, 2.02])


def test_requests_per_minute_limit_paces_the_requests(tmp_path):
    """Against the server: pacing only ever makes a run slower, so its lower bound holds on any machine."""
    with LocalChatServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_env=None,
                                requests_per_minute=1200)  # 20 a second
        paced = Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None), max_concurrency=64)
        started = time.perf_counter()
        paced.generate(requests(30))
        elapsed = time.perf_counter() - started
        assert server.received == 30
    assert elapsed > 0.45  # 20 at once (one second's allowance), then 10 more at 20 a second


def test_tokens_per_minute_limit_paces_requests_larger_than_one_seconds_allowance(tmp_path):
    """Each request is estimated at 1 prompt token + 1,000 completion tokens, at 1,500 tokens a second:
    the token rate the server sees stays within 10% of the limit, though each request is 2/3 of the
    bucket."""
    with LocalChatServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_env=None,
                                tokens_per_minute=60 * 1500)
        paced = Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None), max_concurrency=64)
        started = time.perf_counter()
        paced.generate(
            [Request(messages=({"role": "user", "content": f"q{i}"},), max_tokens=1000) for i in range(6)]
        )
        elapsed = time.perf_counter() - started
        assert server.received == 6
    # 1,500 in the bucket at the start, then 1,500 a second: six of ~1,001 tokens need >= 3 s
    assert 6 * 1000.75 / elapsed < 1.1 * (1500 + 1500 / elapsed)


def test_api_key_from_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "key").write_text("sk-from-file\n")
    with LocalChatServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, api_key_file=str(tmp_path / "key"))
        Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(None)).generate(requests(1))
        assert server.authorization == ["Bearer sk-from-file"]


def test_the_budget_holds_at_its_exact_boundary_with_failures(tmp_path):
    """Q + 1 requests, two of which fail once: Q answers are paid, exactly one request is refused."""
    with LocalChatServer(faults=["500", "500"]) as server:
        capped = teacher(server, tmp_path, max_queries=5, max_concurrency=3)
        responses = capped.generate(requests(6))
        usage = capped.usage["teacher"]
        assert sum(r is not None for r in responses) == 5 and capped.budget.used == 5
        assert usage.over_budget == 1 and usage.retries == 2 and server.served == {"500": 2, "ok": 5}


def test_identical_requests_of_one_batch_are_paid_once(tmp_path):
    with LocalChatServer() as server:
        t = teacher(server, tmp_path, max_queries=10)
        same = requests(1) * 3
        responses = t.generate(same)
        assert server.received == 1 and t.budget.used == 1
        assert [r.text for r in responses] == ["echo: question 0"] * 3
        assert t.usage["teacher"].deduplicated == 2 and t.usage["teacher"].cache_hits == 2


@pytest.mark.parametrize("count_timeouts, spent", [(True, 2), (False, 0)])
def test_a_timed_out_request_counts_as_spent_unless_switched_off(tmp_path, count_timeouts, spent):
    """A server may bill work whose answer never came: by default each timed-out attempt is spent."""
    with LocalChatServer(faults=["hang", "hang"]) as server:
        t = teacher(server, tmp_path, max_queries=3, max_attempts=2, timeout_s=2.0, max_concurrency=1,
                    count_timeouts=count_timeouts, max_failure_share=1.0)
        responses = t.generate(requests(2))
        assert [r is not None for r in responses] == [False, True]  # the first hung on both attempts
        assert t.budget.used == 1 + spent and t.usage["teacher"].timed_out == 1


def test_a_teacher_that_cannot_be_reached_stops_the_cell_with_what_it_said(tmp_path):
    # a refused connection fails at once: were it waited on like a timeout, 8 attempts would take 8 minutes
    backend = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key_env=None, timeout_s=60)
    down = Teacher(backend, GenerationCache(tmp_path / "c.sqlite"), Budget(4), max_attempts=2, backoff_s=0.01)
    started = time.perf_counter()
    with pytest.raises(TeacherFailed, match=r"left 4 of 4 requests without a usable answer after 2 attempts "
                                            r"each "
                                            r"\(connection x8: .*Cannot connect to host 127.0.0.1:9"):
        down.generate(requests(4))
    assert time.perf_counter() - started < 60 and down.budget.used == 0
    with pytest.raises(TeacherFailed, match="left 1 of 1 requests without a usable answer"):
        down.probe()


def test_the_probe_asks_once_and_is_not_part_of_the_budget(tmp_path):
    with LocalChatServer(faults=["401"]) as server:
        with pytest.raises(TeacherFailed, match="refused the API key"):
            teacher(server, tmp_path).probe()
        t = teacher(server, tmp_path, max_queries=1)
        t.probe()
        assert server.received == 2 and t.budget.used == 0 and t.usage["probe"].requests == 1


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("sk-one\nsk-two\n", "holds 2 non-empty lines"),
    ("\n", "holds 0 non-empty lines"),
])
def test_a_bad_key_file_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "key").write_text(content)
    with pytest.raises(BenchError, match=message):
        OpenAIBackend(model="m", api_key_file=str(tmp_path / "key"))


def test_an_unset_key_variable_fails_unless_the_server_is_keyless(monkeypatch):
    monkeypatch.delenv("MY_TEACHER_KEY", raising=False)
    with pytest.raises(BenchError, match="names MY_TEACHER_KEY, which is not set"):
        OpenAIBackend(model="m", api_key_env="MY_TEACHER_KEY")
    OpenAIBackend(model="m", api_key_env=None)  # keyless: no error, no header


def test_the_kth_sample_of_a_prompt_is_its_own_query_across_calls(tmp_path):
    """Sample 1 asked in a later call than sample 0 must not be served sample 0's cached answer."""
    with LocalChatServer() as server:
        t = teacher(server, tmp_path)
        base = Request(messages=({"role": "user", "content": "q"},))
        t.generate([base])
        t.generate([Request(base.messages, sample_index=1)])
        assert server.received == 2 and t.usage["teacher"].cache_hits == 0
        t.generate([Request(base.messages, sample_index=1)])
        assert server.received == 2 and t.usage["teacher"].cache_hits == 1


def test_a_timeout_with_no_budget_left_is_a_refusal_not_a_teacher_failure(tmp_path):
    """The last query of a budget times out: it is spent, and the request is refused over budget rather
    than counted as a teacher that does not answer (which could stop the cell)."""
    with LocalChatServer(faults=["hang"]) as server:
        t = teacher(server, tmp_path, max_queries=1, timeout_s=2.0)
        assert t.generate(requests(1)) == [None]  # no TeacherFailed, though 1 of 1 got no answer
        usage = t.usage["teacher"]
        assert t.budget.used == 1 and usage.over_budget == 1 and usage.unanswered == 0
        assert server.received == 1


def test_stop_strings_reach_the_server_and_split_the_cache(tmp_path):
    seen = []
    with LocalChatServer(reply=lambda body: seen.append(body.get("stop")) or "1. Text: x") as server:
        t = teacher(server, tmp_path)
        plain = Request(messages=({"role": "user", "content": "q"},))
        t.generate([plain, Request(messages=plain.messages, stop=("\n2.",))])
        assert seen == [None, ["\n2."]] and server.received == 2  # another stop is another query
