"""The front end every LLM query goes through (augmenter and teacher roles alike): batches of chat
requests in, responses out, in order. It serves what the generation cache holds, asks identical requests
of a batch once, claims the rest so that no two processes pay for one request, has the `Sender` ask the
backend for what it claimed, stops the cell when the backend is down, and keeps what it used for
teacher=replay. Never more queries than the budget, no request paid twice, no crash on a bad response."""

import asyncio
import time

from bench.console import bar as progress_bar
from bench.database import CLAIM_POLL_S  # a request another process is asking: how often to look
from bench.teachers.accounts import Budget, Ledger
from bench.teachers.backend import (
    LocalBackend,
    RemoteBackend,
    Request,
    Response,
    TeacherFailed,
    stored,
    unusable,
)
from bench.teachers.batch import BatchSender
from bench.teachers.cache import GenerationCache, cache_key
from bench.teachers.sender import Sender

PROBE_PROMPT = "Reply with the word OK."


class Teacher:
    def __init__(self, backend: RemoteBackend | LocalBackend, cache: GenerationCache, budget: Budget,
                 max_concurrency: int = 8, max_attempts: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, prices: dict | None = None, max_failure_share: float = 0.5,
                 name: str = "teacher", structured: bool = False):
        self.name = name
        self.structured = structured  # replies kept to each step's JSON schema by the backend
        self.max_failure_share = max_failure_share  # of a batch's requests sent; past it the cell stops
        self.backend = backend
        self.cache = cache
        self.budget = budget
        # {"input_per_mtok": dollars, "output_per_mtok": dollars}, at the backend's discount (batch jobs)
        self.price_factor = getattr(backend, "price_factor", 1.0)
        self.prices = {k: v * self.price_factor for k, v in (prices or {}).items()}
        self.usage = Ledger()
        sends = BatchSender if getattr(backend, "mode", "live") == "batch" else Sender
        self.sender = sends(backend, cache, budget, self.usage, self.identity, max_concurrency, max_attempts,
                            backoff_s, max_backoff_s)
        self.records: list = []  # every answer this run used, cached or not: what teacher=replay reads

    def identity(self, request: Request) -> dict:
        return request.identity(self.backend.name, self.backend.model, self.backend.endpoint)

    def generate(self, requests: list, description: str = "teacher") -> list:
        """Responses in request order; None where no usable answer could be had (failed after all
        attempts, the budget was spent, or the reply was null or empty). Failures are counted in `usage`,
        never raised."""
        keys = [cache_key(self.identity(r)) for r in requests]
        stored_rows = self.cache.get_many(keys)  # one look for the batch (one round trip to a server)
        results: list = [None] * len(requests)
        misses, first_of = [], {}  # an identical request later in the batch waits for the first's answer
        for i, (request, key) in enumerate(zip(requests, keys)):
            hit = self._answer(key, stored_rows.get(key))
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
                usage.copies_unanswered += 1  # the first got none either
            else:
                self._served_free(request, answer, results, i)
        for request, key, response in zip(requests, keys, results):
            if response is not None:
                self.records.append({
                    "key": key, "role": request.role, "kind": request.kind, "cached": response.cached,
                    "identity": self.identity(request), "response": stored(response),
                })
        return results

    def _cached(self, key: str) -> Response | None:
        return self._answer(key, self.cache.get(key))

    def _answer(self, key: str, row: dict | None) -> Response | None:
        """The answer a cache row holds, or None; a row that is not a usable answer (a null reply an older
        version cached) is deleted, so that it is asked again."""
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
        usage.truncated += not response.ok  # a recorded truncation stays a failure, at no new cost
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
            usage.unanswered += 1
            self._stop_if_failing(1, 1)
        usage.requests += 1
        usage.prompt_tokens += response.prompt_tokens
        usage.completion_tokens += response.completion_tokens

    def usage_report(self) -> dict:
        """Per role: queries, cache hits, failures, retries, refusals, tokens, dollars (and the price factor
        they were charged at, where a discount applies); for the run record."""
        report = self.usage.report(self.prices)
        if self.price_factor != 1.0:
            for line in report.values():
                line["price_factor"] = self.price_factor
        return report

    def cost(self, role: str | None = None) -> float:
        return self.usage.cost(self.prices, role)
