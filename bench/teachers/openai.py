"""Any OpenAI-compatible chat-completions server: OpenAI, vLLM's server, Ollama, TGI, a LiteLLM proxy.
Async with requests-per-minute and tokens-per-minute limits; every transient failure becomes a
RetryableError for the Teacher's backoff. The API key comes from the environment (or a file named in
config) and lives only in the Authorization header."""

import asyncio
import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import aiohttp

from bench.errors import BenchError
from bench.secrets import hold, redact
from bench.teachers.backend import (
    RejectedError,
    RemoteBackend,
    Request,
    Response,
    RetryableError,
    TeacherFailed,
)


class RateLimiter:
    """A token bucket refilled continuously at `per_minute / 60` a second, holding one second's worth:
    a smooth rate rather than a burst of a whole minute's allowance at the start. A request is charged
    all it costs: one larger than the bucket waits for a full bucket and leaves it in debt, which later
    requests wait out, so the rate holds for requests of any size. `clock` and `sleep` are injectable so
    the schedule can be tested without waiting."""

    def __init__(self, per_minute: float, clock=time.monotonic, sleep=asyncio.sleep):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.available = self.capacity
        self._clock, self._sleep = clock, sleep
        self.updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        needed = min(amount, self.capacity)  # what must be in the bucket before it is let through
        async with self._lock:  # first come, first served
            while True:
                now = self._clock()
                self.available = min(self.capacity, self.available + (now - self.updated) * self.rate)
                self.updated = now
                if self.available >= needed - 1e-9:  # a wait's rounding must not be waited for again
                    self.available -= amount  # the whole cost: below zero is a debt
                    return
                await self._sleep((needed - self.available) / self.rate)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _said(payload: bytes) -> str:
    """What an error body says, the key scrubbed before it is cut short (a cut key would slip through)."""
    return redact(payload.decode(errors="replace"))[:200]


def read_key(path: str) -> str:
    """The key alone on the one line of a key file."""
    file = Path(path)
    if not file.is_file():
        raise BenchError(f"teacher.backend.api_key_file={path}: no such file; write the key there or use "
                         "teacher.backend.api_key_env")
    lines = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if len(lines) != 1:
        raise BenchError(f"teacher.backend.api_key_file={path} holds {len(lines)} non-empty lines; it must "
                         "hold the key alone, on one line")
    return hold(lines[0])


def env_key(name: str | None) -> str:
    """The key in the environment variable `name`; None: a server that takes no key."""
    if name is None:
        return ""
    key = os.environ.get(name, "").strip()
    if not key:
        raise BenchError(f"teacher.backend.api_key_env names {name}, which is not set: export {name}=<key>, "
                         "or set teacher.backend.api_key_file, or api_key_env=null for a server without keys")
    return hold(key)


@dataclass
class BatchSettings:
    """teacher.backend.batch: how a batch job runs (mode=batch)."""

    discount: float = 0.5  # the provider's price off for batch jobs (OpenAI's: half)
    poll_s: float = 30.0  # the first wait between looks at a job; it grows by half each look, to poll_max_s
    poll_max_s: float = 600.0
    retry: str = "batch"  # the requests a job left unanswered: batch (a new, smaller job) or live
    max_requests: int = 50_000  # a job's limits (OpenAI's): more requests go as several jobs
    max_bytes: int = 200 * 2**20

    @classmethod
    def of(cls, settings: dict | None) -> "BatchSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings or {}) - known)
        if unknown:
            raise BenchError(f"teacher.backend.batch has unknown keys {unknown}: use "
                             f"{', '.join(sorted(known))}")
        made = cls(**(settings or {}))
        if made.retry not in ("batch", "live") or not 0 <= made.discount < 1:
            raise BenchError(f"teacher.backend.batch: retry={made.retry} (batch or live), discount="
                             f"{made.discount} (in [0, 1))")
        return made


class OpenAIBackend(RemoteBackend):
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        api_key_file: str | None = None,
        timeout_s: float = 60.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        mode: str = "live",
        batch: dict | None = None,
    ):
        # mode=batch: a round's requests go as one job of the provider's Batch API (bench/teachers/batch.py;
        # `batch` its settings: BatchSettings), at its discount
        if mode not in ("live", "batch"):
            raise BenchError(f"teacher.backend.mode={mode}: use live (a request at a time) or batch (the "
                             "provider's Batch API)")
        self.mode = mode
        self.batch = BatchSettings.of(batch)
        self.price_factor = 1.0 - self.batch.discount if mode == "batch" else 1.0
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.endpoint = self.base_url  # one model name at two servers is two sets of answers
        self.timeout_s = timeout_s
        self._api_key = read_key(api_key_file) if api_key_file else env_key(api_key_env)
        self._rpm = requests_per_minute
        self._tpm = tokens_per_minute
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        # made inside the running event loop; limiters too, since asyncio primitives bind to it.
        # aiohttp rather than httpx: httpx's pool tops out near 130 requests/s at 64 in flight here.
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._request_limit = RateLimiter(self._rpm) if self._rpm else None
        self._token_limit = RateLimiter(self._tpm) if self._tpm else None

    async def close(self) -> None:
        await self._session.close()

    def __repr__(self) -> str:  # never shows the key
        return f"{self.model} at {self.base_url}"

    async def acomplete(self, request: Request) -> Response:
        if self._request_limit:
            await self._request_limit.acquire()
        if self._token_limit:  # the prompt's size is known only roughly before the server counts it
            prompt_chars = sum(len(m["content"]) for m in request.messages)
            await self._token_limit.acquire(prompt_chars / 4 + request.max_tokens)
        body = self.chat_body(request)
        try:
            async with self._session.post(f"{self.base_url}/chat/completions", json=body) as reply:
                status, headers, payload = reply.status, reply.headers, await reply.read()
        except TimeoutError:
            raise RetryableError("timeout", f"no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as error:
            raise RetryableError("connection", f"{type(error).__name__}: {error}") from None
        if status == 429:
            raise RetryableError("429", "rate limited", retry_after=_retry_after(headers.get("Retry-After")))
        if status >= 500:
            raise RetryableError(str(status), _said(payload))
        if status in (401, 403):
            raise TeacherFailed(f"the teacher server at {self.base_url} refused the API key ({status}); "
                                "check the key's environment variable or file")
        if status >= 400 and request.schema and any(w in _said(payload).lower()
                                                    for w in ("response_format", "json_schema", "guided")):
            raise TeacherFailed(f"the teacher server at {self.base_url} refuses structured outputs "
                                f"({status}: {_said(payload)}): set teacher.structured=false")
        if status >= 400:
            raise RejectedError(str(status), _said(payload))
        try:
            return self.response_of(json.loads(payload))
        except (ValueError, KeyError, IndexError, TypeError):
            raise RetryableError("malformed") from None

    def chat_body(self, request: Request) -> dict:
        """The chat-completions request body (live, or a line of a batch job)."""
        return {"model": self.model, "messages": list(request.messages), "temperature": request.temperature,
                "top_p": request.top_p, "max_tokens": request.max_tokens,
                **({"stop": list(request.stop)} if request.stop and not request.schema else {}),
                **({"response_format": {"type": "json_schema", "json_schema": {
                    "name": request.kind, "schema": json.loads(request.schema), "strict": True}}}
                   if request.schema else {})}

    @staticmethod
    def response_of(data: dict) -> Response:
        """A chat completion's answer; a null or empty content is counted by the Teacher, never cached."""
        choice, usage = data["choices"][0], data.get("usage") or {}
        return Response(text=choice["message"]["content"],
                        finish_reason=choice.get("finish_reason") or "stop",
                        prompt_tokens=usage.get("prompt_tokens", 0),
                        completion_tokens=usage.get("completion_tokens", 0))

    async def call(self, method: str, path: str, **kwargs) -> tuple[int, bytes]:
        """Another endpoint of the server (the Batch API's files and batches): status and body."""
        try:
            async with self._session.request(method, f"{self.base_url}{path}", **kwargs) as reply:
                return reply.status, await reply.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            raise RetryableError("connection", f"{type(error).__name__}: {error}") from None
