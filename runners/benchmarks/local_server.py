"""A local OpenAI-compatible chat-completions server on 127.0.0.1 with a fixed latency and injected
faults, for the tests and the teacher benchmark: the real HTTP path, no network. GET /v1/stats reports
what reached it.

    with LocalChatServer(latency_s=0.05, faults=["429", "500", "hang", "malformed", "length"]) as server:
        ... OpenAIBackend(model="local", base_url=server.base_url) ...

Each listed fault is served once, to the first requests that arrive; after them `fault_rate` of the
requests get a fault drawn from `fault_kinds` (seeded), and the others a normal answer: `reply(body)`'s
text, or by default an echo of the last message. The faults:
an HTTP status such as '429' (with Retry-After) or '500', 'hang' (no answer until the client gives
up and closes the connection, counted in `hung_up`; at most `hang_s`), 'malformed' (a body that is not
JSON), 'length' (finish_reason 'length', a truncated answer),
'null' (a legal answer whose content is null, as with a refusal or a tool call), 'empty' (content "")
and 'echo_auth' (a 400 whose error body repeats the request's Authorization header, as some proxies do)."""

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Self

from aiohttp import web


class LocalChatServer:
    def __init__(self, latency_s: float = 0.0, faults: list | None = None, retry_after_s: float = 0.2,
                 hang_s: float = 600.0, port: int = 0, reply=None, fault_rate: float = 0.0,
                 fault_kinds: tuple = ("429", "500", "hang", "malformed", "length"), seed: int = 0):
        self.port = port
        self.latency_s = latency_s
        self.pending_faults = list(faults or [])
        self.reply = reply or (lambda body: f"echo: {body['messages'][-1]['content']}")
        self.fault_rate, self.fault_kinds, self._rng = fault_rate, fault_kinds, random.Random(seed)
        self.billable: list = []  # the last message of each request answered, truncated or hung: all billable
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.received = 0  # every request that reached the server
        self.served = Counter()  # what it answered: 'ok' or the fault
        self.hung_up = 0  # hangs whose client gave up and closed the connection
        self.authorization: list = []  # the Authorization headers seen (tests check keys travel only here)
        self._lock = threading.Lock()
        self.hold_after, self.admitted, self._loop = None, 0, None
        self.held = 0  # requests that arrived while holding (answered 503 once released)
        self.error_message: str | None = None  # what an injected error status says (default: 'injected N')

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"received": self.received, "served": dict(self.served)})

    def hold(self, after: int | None) -> None:
        """Answer `after` more requests, then hold every later one unanswered (a client killed meanwhile
        never gets them, and they are not billed); None answers the held ones with 503 and stops holding."""
        self.hold_after = None if after is None else self.admitted + after
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._released.set if after is None else self._released.clear)

    def hangs_ended(self, count: int, within_s: float = 120.0) -> int:
        """`hung_up` once it reaches `count` (the server notices a closed connection on its next poll,
        which a loaded machine can delay), or what it is after `within_s`."""
        deadline = time.monotonic() + within_s
        while self.hung_up < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.hung_up

    async def _hang(self, request: web.Request) -> None:
        """No answer until the client closes the connection (its timeout: however slow the machine, a
        hang is never answered in time) or `hang_s` passes."""
        deadline = asyncio.get_running_loop().time() + self.hang_s
        while asyncio.get_running_loop().time() < deadline:
            if request.transport is None or request.transport.is_closing():
                with self._lock:
                    self.hung_up += 1
                return
            await asyncio.sleep(0.02)

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            held = self.hold_after is not None and self.admitted >= self.hold_after
            self.admitted += not held
        if held:
            self.held += 1
            await self._released.wait()
            return web.json_response({"error": {"message": "held, then dropped"}}, status=503)
        with self._lock:
            self.received += 1
            if self.pending_faults:
                fault = self.pending_faults.pop(0)
            elif self._rng.random() < self.fault_rate:
                fault = self._rng.choice(self.fault_kinds)
            else:
                fault = "ok"
            if fault == "hang":  # the server did the work; the client will have given up
                self.billable.append(body["messages"][-1]["content"])
            self.served[fault] += 1
            self.authorization.append(request.headers.get("Authorization"))
        await asyncio.sleep(self.latency_s)
        if fault == "echo_auth":
            token = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
            said = f"invalid request; the api-key header was {token}"
            return web.json_response({"error": {"message": said}}, status=400)
        if fault.isdigit():  # an HTTP error status: '429' (with Retry-After), '500', '401', ...
            headers = {"Retry-After": str(self.retry_after_s)} if fault == "429" else {}
            return web.json_response(
                {"error": {"message": self.error_message or f"injected {fault}"}}, status=int(fault),
                headers=headers)
        if fault == "hang":
            await self._hang(request)
        if fault == "malformed":
            return web.Response(text='{"choices": [', content_type="application/json")
        prompt = body["messages"][-1]["content"]
        text = {"null": None, "empty": ""}.get(fault, self.reply(body))
        if fault != "hang":  # a hang was counted when it arrived: its client has given up by now
            self.billable.append(prompt)  # answered (or truncated): billable from here
        return web.json_response(
            {
                "id": f"chatcmpl-{self.received}",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text[:5] if fault == "length" else text},
                        "finish_reason": "length" if fault == "length" else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len((text or "").split()),
                    "total_tokens": len(prompt.split()) + len((text or "").split()),
                },
            }
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/stats", self._stats)

    def __enter__(self) -> Self:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._released = asyncio.Event()
            app = web.Application(client_max_size=1 << 30)
            self.routes(app)
            # a handler still hanging at the end (its client alive) is cancelled, not waited for
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


if (
    __name__ == "__main__"
):  # a server in its own process: python -m runners.benchmarks.local_server PORT LATENCY_S
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runners.benchmarks.local_server",
                                     description="A local OpenAI-compatible chat server for tests and "
                                                 "benchmarks; prints its base URL, serves until killed.")
    parser.add_argument("port", type=int, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("latency_s", type=float, help="seconds before each answer")
    args = parser.parse_args()
    with LocalChatServer(port=args.port, latency_s=args.latency_s) as server:
        print(server.base_url, flush=True)
        while True:
            time.sleep(3600)
