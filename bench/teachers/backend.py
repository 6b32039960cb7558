"""The contract of a teacher backend: what a way of running a model implements so that the `Teacher`
(bench/teachers/teacher.py) can query it. Everything else (the cache, the budget, concurrency, retries,
accounting) is the Teacher's, so a backend's guarantees hold whichever backend answers.

A backend is one of two kinds (docs/teachers.md, "Writing a backend", walks through one):
- `RemoteBackend`: a server answering one request at a time. Implement `async acomplete(request) ->
  Response`; raise `RetryableError(kind)` for a transient failure (429, 5xx, a timeout, a dropped
  connection, a malformed body: the Teacher retries with backoff, a server's Retry-After as a floor) and
  `RejectedError(kind)` for a request the server refuses (another 4xx: never retried). `open()` and
  `close()` run inside the event loop around each batch (clients, rate limiters). Set `endpoint` to the
  server's URL: it is part of every cache key.
- `LocalBackend`: a model in this process. Implement `complete_batch(requests) -> list`, one `Response`
  (or None: no answer) per request, in order.
Both set `name` (the backend's kind) and `model`; the Teacher builds the backend from `teacher.backend`
(its `_target_` names the class, the other keys are its constructor's arguments)."""

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

from bench.errors import BenchError


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
    # structured replies (teacher.structured): the JSON schema the backend must keep the reply to, as
    # canonical JSON text; None: free text, read by the prompt's patterns
    schema: str | None = None

    def identity(self, backend: str, model: str, endpoint: str = "") -> dict:
        """What determines the response, and so the cache key (role, kind and source do not): a remote
        backend's endpoint too, so one model name at two servers is two answers."""
        identity = {"backend": backend, "model": model, "messages": list(self.messages),
                    "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                    "sample_index": self.sample_index}
        if endpoint:
            identity["endpoint"] = endpoint
        if self.schema:  # a constrained reply is another answer (earlier keys stay valid without one)
            identity["schema"] = self.schema
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


class TeacherFailed(BenchError):
    """The teacher did not answer (unreachable, refusing the key, timing out): the cell stops, recorded
    as failed. A backend raises it for what no retry fixes (a refused key)."""


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


def stored(response: Response) -> dict:
    """What the cache and the records keep of a response: what the backend said."""
    return {k: v for k, v in asdict(response).items() if k not in ("cached", "key")}
