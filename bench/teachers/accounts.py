"""A teacher's accounts: the hard query budget Q (`Budget`) and, per role, what happened to its requests
(`RoleUsage`, kept in a `Ledger`): each counter has one meaning, and `failed` is their sum."""

import threading
from dataclasses import asdict, dataclass, field

from bench.secrets import redact


@dataclass
class RoleUsage:
    """What happened to one role's requests. A request is answered by the backend (`requests`, paid) or
    from the cache (`cache_hits`), refused by the budget (`over_budget`), or left unanswered; the ways a
    request ends without a usable answer are counted apart, and `failed` is their sum."""

    requests: int = 0  # queries answered by the backend, usable or not (what the budget counts)
    cache_hits: int = 0  # answers from the cache or to an identical request of the batch: not paid
    waited: int = 0  # of the cache hits, answers another process was asking: waited for, not paid twice
    deduplicated: int = 0  # identical requests of one batch, asked once (the copies)
    over_budget: int = 0  # requests refused because the budget was spent
    retries: int = 0  # attempts after a retryable fault
    # -- the ways to no usable answer, each counted once
    unanswered: int = 0  # sent, and no answer after every attempt
    unusable: int = 0  # answered with nothing to use (null or empty content, wrong shape): paid, not cached
    truncated: int = 0  # answered but cut short (finish_reason length, ...): paid (or cached), not used
    copies_unanswered: int = 0  # copies of a batch's request whose first got no usable answer either
    timed_out: int = 0  # of the unanswered and refused, the ones whose last attempt timed out
    prompt_tokens: int = 0
    completion_tokens: int = 0
    faults: dict = field(default_factory=dict)  # fault kind -> count (429, 500, timeout, ...)
    fault_examples: dict = field(default_factory=dict)  # fault kind -> what the server (or socket) said

    @property
    def failed(self) -> int:
        """Requests left without a usable answer (the budget's refusals aside)."""
        return self.unanswered + self.unusable + self.truncated + self.copies_unanswered

    def fault(self, kind: str, message: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.fault_examples.setdefault(kind, redact(message)[:200])


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
        return {role: {**asdict(usage), "failed": usage.failed, "cost_usd": self.cost(prices, role)}
                for role, usage in self.items()}


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
