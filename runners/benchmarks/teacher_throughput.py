"""Teacher-interface benchmark: N requests against the local OpenAI-compatible server (in its own
process) with a fixed latency, at several concurrency limits, against the ideal
N x latency / concurrency; then the same requests again, served from the generation cache.

    python -m runners.benchmarks.teacher_throughput [--requests 2000] [--latency 0.05] [--concurrency 1 8 64]
        [--cache-url postgresql://user@host:port/db]

--cache-url runs it through the PostgreSQL cache of a grid across nodes as well, beside the SQLite file of
one machine in the same run, each concurrency's requests its own (no run is served by an earlier one).
--repeat N runs each (cache, concurrency) N times, interleaved, for the spread."""

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench.teachers import Budget, Request, Teacher
from bench.teachers.cache import GenerationCache
from bench.teachers.openai import OpenAIBackend
from bench.teachers.postgres_cache import PostgresCache


def received(base_url: str) -> int:
    with urllib.request.urlopen(f"{base_url}/stats") as reply:
        return json.load(reply)["received"]


def timed_run(base_url: str, cache, requests: list, concurrency: int) -> float:
    teacher = Teacher(OpenAIBackend(model="local", base_url=base_url, api_key_env=None), cache, Budget(None),
                      max_concurrency=concurrency)
    started = time.perf_counter()
    answers = teacher.generate(requests, description=f"concurrency {concurrency}")
    if not all(answers):
        raise RuntimeError("every request must be answered")
    return time.perf_counter() - started


def raw_client_seconds(base_url: str, n: int, concurrency: int) -> float:
    """The same traffic from a bare aiohttp client: what the server and the network path allow."""

    async def run() -> None:
        gate = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one(i: int) -> None:
                async with gate, session.post(f"{base_url}/chat/completions", json={
                        "model": "local", "messages": [{"role": "user", "content": f"raw {i}"}]}) as reply:
                    await reply.read()

            await asyncio.gather(*(one(i) for i in range(n)))

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def measure(base_url: str, args, scratch: Path) -> None:
    tag = f"{time.time():.0f}"  # a PostgreSQL cache outlives the run: this run's requests are new to it
    caches = ["SQLite"] + (["PostgreSQL"] if args.cache_url else [])
    print(f"{args.requests} requests, server latency {args.latency * 1000:.0f} ms, caches: "
          f"{' and '.join(caches)}, each run {args.repeat} time(s), interleaved\n")
    print("| cache | concurrency | wall s | ideal s | share of ideal | requests reaching the server "
          "| cache-served req/s |")
    print("|---|---|---|---|---|---|---|")
    for concurrency in args.concurrency:
        for run in range(args.repeat):
            for name in caches:
                cache = (PostgresCache(args.cache_url) if name == "PostgreSQL"
                         else GenerationCache(scratch / f"c{concurrency}-{run}.sqlite"))
                requests = [Request(messages=({"role": "user", "content":
                                               f"{tag} {name} c{concurrency} r{run} question {i}"},))
                            for i in range(args.requests)]
                before = received(base_url)
                wall = timed_run(base_url, cache, requests, concurrency)
                reached = received(base_url) - before
                cached_wall = timed_run(base_url, cache, requests, concurrency)
                if received(base_url) - before != reached:
                    raise RuntimeError("a cached run must send nothing")
                ideal = args.requests * args.latency / concurrency
                print(f"| {name} | {concurrency} | {wall:.2f} | {ideal:.2f} | {ideal / wall:.0%} | "
                      f"{reached} | {args.requests / cached_wall:,.0f} |", flush=True)
    top = max(args.concurrency)
    raw = raw_client_seconds(base_url, args.requests, top)
    ideal = args.requests * args.latency / top
    print(f"\nreference: a bare aiohttp client at concurrency {top}, no teacher layer: {raw:.2f} s, "
          f"{ideal / raw:.0%} of ideal")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runners.benchmarks.teacher_throughput",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--cache-url", default=None, help="a PostgreSQL cache, measured beside SQLite")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    # the server runs in its own process, as a real one would: its work is not the client's
    server = subprocess.Popen(
        [sys.executable, "-m", "runners.benchmarks.local_server", "0", str(args.latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as scratch:
            measure(base_url, args, Path(scratch))
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
