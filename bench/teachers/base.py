"""One interface to every LLM the suite queries (augmenter and teacher roles alike): batches of chat
requests in, responses with token usage out. What every backend shares lives here — the generation
cache, the hard query budget, bounded concurrency, retries with backoff, and accounting — so its
guarantees hold whichever backend answers: never more queries than the budget, no request paid twice,
no crash on a bad response."""

import asyncio
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

from bench.console import bar as progress_bar
from bench.database import CLAIM_POLL_S  # a request another process is asking: how often to look
from bench.errors import BenchError
from bench.secrets import redact
from bench.teachers.cache import GenerationCache, cache_key


@dataclass(frozen=True)
class Request:
    messages: tuple  # ({"role": ..., "content": ...}, ...), already rendered
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    sample_index: int = 0  # the k-th sample of the same prompt: k samples stay k distinct queries
    role: str = "teacher"  # teacher | augmenter: whose budget and accounting line it is
    kind: str = "answer"  # what is asked (new_example, rephrase, answer, ...): the simulator reads it
    # the example it is about (the simulator, reply checks)
    source: dict | None = field(default=None, compare=False)
    reply_format: str | None = field(default=None, compare=False)  # Jinja of the reply the prompt asks for
    # strings that end the reply (not included), as the OpenAI API's `stop`: a prompt asking for one
    # numbered example stops at "\n2." rather than paying for, and losing to max_tokens, a second one
    stop: tuple = ()

    def identity(self, backend: str, model: str, endpoint: str = "") -> dict:
        """What determines the response, and so the cache key (role, kind and source do not): a remote
        backend's endpoint too, so one model name at two servers is two answers."""
        identity = {"backend": backend, "model": model, "messages": list(self.messages),
                    "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                    "sample_index": self.sample_index}
        if endpoint:
            identity["endpoint"] = endpoint
        return {**identity, "stop": list(self.stop)} if self.stop else identity  # earlier keys stay valid


@dataclass
class Response:
    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    key: str = ""

    @property
    def ok(self) -> bool:
        return self.finish_reason == "stop"


class RetryableError(Exception):
    """A transient failure (429, 5xx, timeout, connection, malformed body): worth another attempt."""

    def __init__(self, kind: str, message: str = "", retry_after: float | None = None):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind  # the accounting line: '429', '500', 'timeout', 'connection', 'malformed'
        self.retry_after = retry_after


class RejectedError(Exception):
    """The server refused this one request (a 4xx other than 429): no point in retrying it."""

    def __init__(self, kind: str, message: str = ""):
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind


class RemoteBackend(ABC):
    """A server answering one request at a time; the Teacher runs many concurrently."""

    name = "remote"
    model = ""
    endpoint = ""  # the server's URL: part of every cache key

    def __repr__(self) -> str:
        return f"{self.name}:{self.model}"

    async def open(self) -> None:
        """Called inside the event loop before the first request of a batch (clients, limiters)."""

    async def close(self) -> None:
        """Called after the batch's last request."""

    @abstractmethod
    async def acomplete(self, request: Request) -> Response:
        """One answer, or RetryableError for a transient failure."""


class LocalBackend(ABC):
    """A model in this process, answering a batch at once on its device."""

    name = "local"
    model = ""
    endpoint = ""

    def __repr__(self) -> str:
        return f"{self.name}:{self.model}"

    @abstractmethod
    def complete_batch(self, requests: list) -> list:
        """One Response (or None for no answer) per request, in order."""


def unusable(response) -> str | None:
    """Why a reply can be neither used nor cached (its fault kind), or None: a null content (what a
    server sends with a refusal or a tool call), an empty one, or a reply of the wrong shape."""
    text = getattr(response, "text", None)
    if not isinstance(response, Response) or not isinstance(text, str | None):
        return "malformed"
    if text is None:
        return "null content"
    return "empty" if not text.strip() else None


def _stored(response: Response) -> dict:
    """What the cache and the records keep of a response: what the backend said."""
    return {k: v for k, v in asdict(response).items() if k not in ("cached", "key")}


@dataclass
class RoleUsage:
    requests: int = 0  # queries answered by the backend (what the budget counts)
    cache_hits: int = 0
    failed: int = 0  # requests that produced no usable response after all attempts
    retries: int = 0
    over_budget: int = 0  # requests refused because the budget was spent
    prompt_tokens: int = 0
    completion_tokens: int = 0
    faults: dict = field(default_factory=dict)  # fault kind -> count (429, 500, timeout, ...)
    fault_examples: dict = field(default_factory=dict)  # fault kind -> what the server (or socket) said
    unanswered: int = 0  # requests sent that got no answer after every attempt
    unusable: int = 0  # replies with nothing to use (null or empty content, wrong shape): paid, not cached
    timed_out: int = 0  # of those, the ones that timed out (each timed-out attempt is spent: count_timeouts)
    deduplicated: int = 0  # identical requests in one batch, asked once
    waited: int = 0  # of the cache hits, answers another process was asking: waited for, not paid twice

    def fault(self, kind: str, message: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.fault_examples.setdefault(kind, redact(message)[:200])


PROBE_PROMPT = "Reply with the word OK."


class TeacherFailed(BenchError):
    """The teacher did not answer (unreachable, refusing, timing out): the cell stops, recorded as failed."""


class Budget:
    """A hard cap on queries paid for. A request holds a slot while in flight and keeps it if it is
    answered; otherwise its slot is freed for another. With `count_timeouts` every attempt that timed out
    is spent as well (a server may bill work whose answer never arrived: safe for money), and a retry
    after a timeout needs room in the budget. Concurrency can never overshoot."""

    def __init__(self, max_queries: int | None, count_timeouts: bool = True):
        self.max_queries = max_queries
        self.count_timeouts = count_timeouts
        self.used = 0  # queries paid for (answered, or timed out) in this run: what the cap holds
        self.cached = 0  # answers this run took from the cache: free, but part of what it used
        self.in_flight = 0
        self._lock = threading.Lock()

    @property
    def spent(self) -> int:
        """Queries this run has used, paid or cached: what a strategy plans against, so that a rerun
        over a full cache makes the same plan (and pays nothing)."""
        return self.used + self.cached

    def try_take(self) -> bool | None:
        """True: a slot is held. False: the budget is spent. None: only in-flight requests hold the
        rest; ask again once one settles. Answers taken from the cache count: a cell resumed after a
        crash gets the same Q as one that ran through, not Q more."""
        with self._lock:
            if self.max_queries is None or self.spent + self.in_flight < self.max_queries:
                self.in_flight += 1
                return True
            return False if self.in_flight == 0 else None

    def take_cached(self) -> bool:
        """A slot for an answer that costs nothing (the cache's, or an identical request's): it counts
        like a paid one, so that no run spends beyond the budget, whatever the cache already held."""
        with self._lock:
            if self.max_queries is not None and self.spent + self.in_flight >= self.max_queries:
                return False
            self.cached += 1
            return True

    def settle(self, answered: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            self.used += answered

    def spend_timeout(self) -> bool:
        """Count a timed-out attempt as spent; whether the request may try again within the budget."""
        with self._lock:
            if not self.count_timeouts:
                return True
            self.used += 1
            return self.max_queries is None or self.spent + self.in_flight <= self.max_queries



class Ledger(dict):
    """A teacher's accounts, per role (teacher, augmenter, diversity, probe): a `RoleUsage` each."""

    def of(self, role: str) -> RoleUsage:
        return self.setdefault(role, RoleUsage())

    def without_answer(self) -> int:
        """Requests that got no usable answer (none after every attempt, or a null or empty one), over all
        roles so far."""
        return sum(u.unanswered + u.unusable for u in self.values())

    def refused(self) -> int:
        return sum(u.over_budget for u in self.values())

    def cost(self, prices: dict, role: str | None = None) -> float:
        return sum(self[r].prompt_tokens / 1e6 * prices.get("input_per_mtok", 0.0)
                   + self[r].completion_tokens / 1e6 * prices.get("output_per_mtok", 0.0)
                   for r in ([role] if role else list(self)) if r in self)

    def report(self, prices: dict) -> dict:
        return {role: {**asdict(usage), "cost_usd": self.cost(prices, role)} for role, usage in self.items()}


class Sender:
    """Sends the requests a teacher must pay for to its backend: a budget slot each, at most
    `max_concurrency` at once, retries with backoff on a retryable fault; each outcome is settled in the
    budget, counted in the ledger and, when usable, cached before anyone uses it."""

    def __init__(self, backend, cache: GenerationCache, budget: Budget, usage: Ledger, identity,
                 max_concurrency: int, max_attempts: int, backoff_s: float, max_backoff_s: float):
        self.backend, self.cache, self.budget, self.usage = backend, cache, budget, usage
        self.identity = identity  # a request's cache identity (its key's input)
        self.max_concurrency, self.max_attempts = max_concurrency, max_attempts
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s

    def send(self, requests, keys, indices, results, bar) -> None:
        """Ask for `requests[i]`, i in `indices`; the answers land in `results[i]` (None: none usable)."""
        if isinstance(self.backend, LocalBackend):
            self._run_batched(requests, keys, indices, results, bar)
        else:
            asyncio.run(self._run_concurrent(requests, keys, indices, results, bar))

    def _record(self, request: Request, key: str, response: Response | None, timed_out: bool = False,
                budget_spent: bool = False):
        """Settle a request's budget slot, count it, and cache its answer before anyone uses it."""
        usage = self.usage.of(request.role)
        self.budget.settle(answered=response is not None)
        if budget_spent:  # it timed out with no budget left to try again: refused, not a teacher failure
            usage.over_budget += 1
            usage.timed_out += 1
            return None
        if response is None:  # no answer: nothing paid, unless it timed out (the server may bill it)
            usage.failed += 1
            usage.unanswered += 1
            usage.timed_out += timed_out
            return None
        usage.requests += 1
        usage.prompt_tokens += getattr(response, "prompt_tokens", 0) or 0
        usage.completion_tokens += getattr(response, "completion_tokens", 0) or 0
        if kind := unusable(response):  # paid for, but nothing to use: counted, and never cached
            usage.failed += 1
            usage.unusable += 1
            said = str(getattr(response, "text", response))[:80]
            usage.fault(kind, f"{kind}: a reply with no usable text ({said!r})")
            return None
        response.key = key
        self.cache.put(key, self.identity(request), _stored(response))
        if not response.ok:  # e.g. finish_reason 'length': paid for, cached, but not usable
            usage.failed += 1
            usage.fault(response.finish_reason, f"finish_reason {response.finish_reason}: an unusable answer")
            return None
        return response

    def _refuse(self, request: Request) -> None:
        self.usage.of(request.role).over_budget += 1

    def _run_batched(self, requests, keys, misses, results, bar) -> None:
        for start in range(0, len(misses), self.max_concurrency):
            chunk = []
            for i in misses[start:start + self.max_concurrency]:
                if self.budget.try_take():  # nothing is in flight between batches: True or False
                    chunk.append(i)
                else:
                    self._refuse(requests[i])
            responses = self.backend.complete_batch([requests[i] for i in chunk]) if chunk else []
            for i, response in zip(chunk, responses):
                results[i] = self._record(requests[i], keys[i], response)
            bar.update(len(misses[start:start + self.max_concurrency]))

    async def _run_concurrent(self, requests, keys, misses, results, bar) -> None:
        gate = asyncio.Semaphore(self.max_concurrency)

        async def one(i: int) -> None:
            async with gate:
                while (slot := self.budget.try_take()) is None:
                    await asyncio.sleep(0.005)  # wait for an in-flight request to settle
                if slot:
                    results[i] = self._record(requests[i], keys[i], *await self.with_retries(requests[i]))
                else:
                    self._refuse(requests[i])
            bar.update(1)

        await self.backend.open()
        try:
            await asyncio.gather(*(one(i) for i in misses))
        finally:
            await self.backend.close()

    async def with_retries(self, request: Request) -> tuple[Response | None, bool, bool]:
        """The answer (None if every attempt failed), whether an attempt timed out, and whether the
        budget had no room left to pay for another attempt after a timeout."""
        usage, timed_out = self.usage.of(request.role), False
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self.backend.acomplete(request), timed_out, False
            except RejectedError as error:
                usage.fault(error.kind, str(error))
                return None, timed_out, False
            except RetryableError as error:
                usage.fault(error.kind, str(error))
                if error.kind == "timeout":
                    timed_out = True
                    if request.role != "probe" and not self.budget.spend_timeout():
                        return None, timed_out, True
                if attempt == self.max_attempts:
                    return None, timed_out, False
                usage.retries += 1
                # exponential backoff with full jitter; a server's Retry-After is a floor
                delay = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
                await asyncio.sleep(max(delay, error.retry_after or 0.0))
        return None, timed_out, False


class Teacher:
    def __init__(self, backend: RemoteBackend | LocalBackend, cache: GenerationCache, budget: Budget,
                 max_concurrency: int = 8, max_attempts: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, prices: dict | None = None, max_failure_share: float = 0.5,
                 name: str = "teacher"):
        self.name = name
        self.max_failure_share = max_failure_share  # of a batch's requests sent; past it the cell stops
        self.backend = backend
        self.cache = cache
        self.budget = budget
        self.prices = prices or {}  # {"input_per_mtok": dollars, "output_per_mtok": dollars}
        self.usage = Ledger()
        self.sender = Sender(backend, cache, budget, self.usage, self.identity, max_concurrency, max_attempts,
                             backoff_s, max_backoff_s)
        self.records: list = []  # every answer this run used, cached or not: what teacher=replay reads

    def identity(self, request: Request) -> dict:
        return request.identity(self.backend.name, self.backend.model, self.backend.endpoint)

    def generate(self, requests: list, description: str = "teacher") -> list:
        """Responses in request order; None where no usable answer could be had (failed after all
        attempts, the budget was spent, or the reply was null or empty). Failures are counted in `usage`,
        never raised."""
        keys = [cache_key(self.identity(r)) for r in requests]
        results: list = [None] * len(requests)
        misses, first_of = [], {}  # an identical request later in the batch waits for the first's answer
        for i, (request, key) in enumerate(zip(requests, keys)):
            hit = self._cached(key)
            if hit is None:
                if key in first_of:
                    continue
                first_of[key] = i
                misses.append(i)
                continue
            self._served_free(request, hit, results, i)
        if misses:
            failed_before, refused_before = self.usage.without_answer(), self.usage.refused()
            with progress_bar(len(misses), description, "req", disable=len(misses) < 2) as bar:
                self._ask_once(requests, keys, misses, results, bar)
            sent = len(misses) - (self.usage.refused() - refused_before)
            self._stop_if_failing(sent, self.usage.without_answer() - failed_before)
        for i, (request, key) in enumerate(zip(requests, keys)):
            if first_of.get(key, i) == i:
                continue
            usage, answer = self.usage.of(request.role), self._cached(key)
            usage.deduplicated += 1  # an identical request of the batch: the first's answer, free
            if answer is None:
                usage.failed += 1  # the first got none either
            else:
                self._served_free(request, answer, results, i)
        for request, key, response in zip(requests, keys, results):
            if response is not None:
                self.records.append({
                    "key": key, "role": request.role, "kind": request.kind, "cached": response.cached,
                    "identity": self.identity(request), "response": _stored(response),
                })
        return results

    def _cached(self, key: str) -> Response | None:
        """The cache's answer, or None; a row that is not a usable answer (a null reply an older version
        cached) is deleted, so that it is asked again."""
        row = self.cache.get(key)
        if row is None:
            return None
        try:
            response = Response(**{**row, "cached": True, "key": key})
        except TypeError:
            response = None
        if response is None or unusable(response):
            self.cache.delete(key)
            return None
        return response

    def _ask_once(self, requests, keys, misses, results, bar) -> None:
        """Ask the backend for the misses this process claims; wait for those another process is asking
        (its answer lands in the cache), and ask any whose claimant gave up or died."""
        pending = misses
        try:
            while pending:
                mine, _ = self.cache.claim([keys[i] for i in pending])
                ask = [i for i in pending if keys[i] in mine]
                if ask:
                    self.sender.send(requests, keys, ask, results, bar)
                    self.cache.release(keys[i] for i in ask)  # the unanswered: another may try
                waiting = []
                for i in pending:
                    if keys[i] in mine:
                        continue
                    answer = self._cached(keys[i])
                    if answer is None:
                        waiting.append(i)
                        continue
                    if self._served_free(requests[i], answer, results, i):
                        self.usage.of(requests[i].role).waited += 1
                    bar.update(1)
                if waiting and not ask:
                    time.sleep(CLAIM_POLL_S)
                pending = waiting
        finally:
            self.cache.release(keys[i] for i in misses)

    def _served_free(self, request: Request, response: Response, results: list, i: int) -> bool:
        """An answer from the cache (or to an identical request of the batch): used, not paid for, within
        the budget like a paid one."""
        usage = self.usage.of(request.role)
        if not self.budget.take_cached():
            usage.over_budget += 1
            return False
        usage.cache_hits += 1
        results[i] = response if response.ok else None
        usage.failed += not response.ok  # a recorded truncation stays a failure, at no new cost
        return True

    def _stop_if_failing(self, sent: int, failed: int) -> None:
        """Past `max_failure_share` of a batch without a usable answer, the teacher is down (or refuses),
        not flaky: stop the cell
        with what it said, rather than record a cell trained on nothing."""
        if sent == 0 or failed == 0 or failed / sent <= self.max_failure_share:
            return
        said = {kind: example for u in self.usage.values() for kind, example in u.fault_examples.items()}
        counts = {kind: sum(u.faults.get(kind, 0) for u in self.usage.values()) for kind in said}
        detail = "; ".join(f"{kind} x{counts[kind]}: {said[kind]}" for kind in sorted(said, key=counts.get,
                                                                                    reverse=True)[:3])
        raise TeacherFailed(
            f"teacher {self.name} ({self.backend}) left {failed} of {sent} requests without a usable answer "
            f"after {self.sender.max_attempts} attempts each ({detail or 'no answer'}); check the server and "
            f"teacher.backend.base_url, or allow more with teacher.max_failure_share "
            f"(now {self.max_failure_share})"
        )

    def probe(self) -> None:
        """One tiny request straight to a remote backend (no cache, no budget; accounted as role
        'probe'), so an unreachable server or a refused key stops the cell before any training."""
        if isinstance(self.backend, LocalBackend):
            return  # built in this process: building it was the check
        request = Request(messages=({"role": "user", "content": PROBE_PROMPT},), temperature=0.0,
                          max_tokens=4, role="probe", kind="probe")

        async def ask():
            await self.backend.open()
            try:
                return await self.sender.with_retries(request)
            finally:
                await self.backend.close()

        response, _, _ = asyncio.run(ask())
        usage = self.usage.of("probe")
        if response is None:
            usage.failed += 1
            self._stop_if_failing(1, 1)
        usage.requests += 1
        usage.prompt_tokens += response.prompt_tokens
        usage.completion_tokens += response.completion_tokens

    def usage_report(self) -> dict:
        """Per role: queries, cache hits, failures, retries, refusals, tokens, dollars; for the run record."""
        return self.usage.report(self.prices)

    def cost(self, role: str | None = None) -> float:
        return self.usage.cost(self.prices, role)
