"""Sending what a teacher must pay for: a budget slot a request, bounded concurrency, retries with
backoff, and each outcome settled in the budget, counted in the ledger and, when usable, cached before
anyone uses it."""

import asyncio
import random

from bench.teachers.accounts import Budget, Ledger
from bench.teachers.backend import (
    LocalBackend,
    RejectedError,
    Request,
    Response,
    RetryableError,
    stored,
    unusable,
)
from bench.teachers.cache import GenerationCache


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
            asyncio.run(self.opened(self._run_concurrent(requests, keys, indices, results, bar)))

    async def opened(self, work) -> None:
        """`work` with the backend open (its client made inside the running event loop)."""
        await self.backend.open()
        try:
            await work
        finally:
            await self.backend.close()

    def _record(self, request: Request, key: str, response: Response | None) -> Response | None:
        """Settle a request's budget slot, count it, and cache its answer before anyone uses it."""
        if not self._account(request, response):
            return None
        response.key = key
        self.cache.put(key, self.identity(request), stored(response))
        return self._usable(request, response)

    def _account(self, request: Request, response: Response | None, timed_out: bool = False,
                 budget_spent: bool = False) -> bool:
        """Settle the request's budget slot and count what came back; whether it is an answer to cache."""
        usage = self.usage.of(request.role)
        self.budget.settle(answered=response is not None)
        if budget_spent:  # it timed out with no budget left to try again: refused, not a teacher failure
            usage.over_budget += 1
            usage.timed_out += 1
            return False
        if response is None:  # no answer: nothing paid, unless it timed out (the server may bill it)
            usage.unanswered += 1
            usage.timed_out += timed_out
            return False
        usage.requests += 1
        usage.prompt_tokens += getattr(response, "prompt_tokens", 0) or 0
        usage.completion_tokens += getattr(response, "completion_tokens", 0) or 0
        if kind := unusable(response):  # paid for, but nothing to use: counted, and never cached
            usage.unusable += 1
            said = str(getattr(response, "text", response))[:80]
            usage.fault(kind, f"{kind}: a reply with no usable text ({said!r})")
            return False
        return True

    def _usable(self, request: Request, response: Response) -> Response | None:
        """A cached answer to use; None, counted, when it was cut short (paid for, cached, not usable)."""
        if response.ok:
            return response
        self.usage.of(request.role).truncated += 1
        self.usage.of(request.role).fault(response.finish_reason,
                                          f"finish_reason {response.finish_reason}: an unusable answer")
        return None

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
            request, key = requests[i], keys[i]
            async with gate:  # the requests in flight to the backend
                while (slot := self.budget.try_take()) is None:
                    await asyncio.sleep(0.005)  # wait for an in-flight request to settle
                answer = await self.with_retries(request) if slot else None
            if answer is None:
                self._refuse(request)
            elif self._account(request, *answer):
                # stored outside the gate: the next request goes out while a server's cache commits this
                # answer, which is used only once it is stored
                response = answer[0]
                response.key = key
                await self.cache.aput(key, self.identity(request), stored(response))
                results[i] = self._usable(request, response)
            bar.update(1)

        await asyncio.gather(*(one(i) for i in misses))

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
