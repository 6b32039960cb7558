"""The in-process `hf` teacher on the real 135M model: N sampled requests one at a time, then as one
batch, with each reply compared between the two (a reply must depend on its request alone). With
--served, the same requests through the `openai` backend to `transformers serve` on 127.0.0.1 (one at a
time, then all in flight at once), without and with its continuous batching.

    python -m runners.benchmarks.real_teacher [--requests 16] [--max-tokens 32] [--threads 1] [--served]

Needs the model fetched once: python -m runners.fetch_models (and for --served:
pip install 'transformers[serving]', which the dev extra brings)."""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import torch

from bench.model_store import offline_or_hub
from bench.teachers import Request
from bench.teachers.local_models import HFBackend
from bench.teachers.openai import OpenAIBackend
from runners.benchmarks.served import TransformersServe

TOPICS = ["rivers", "tax law", "the moon", "football", "baking bread", "the printing press in Europe", "jazz",
          "volcanoes", "chess openings", "the French revolution", "bees", "trains", "glass", "oceans",
          "poetry", "coffee"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runners.benchmarks.real_teacher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (time things alone)")
    parser.add_argument("--served", action="store_true", help="also through transformers serve")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = offline_or_hub("HuggingFaceTB/SmolLM2-135M-Instruct")
    backend = HFBackend(model)
    requests = [Request(messages=({"role": "user", "content": f"Write one short question about "
                                   f"{TOPICS[i % len(TOPICS)]}."},), temperature=1.0, top_p=0.95,
                        max_tokens=args.max_tokens, sample_index=i) for i in range(args.requests)]
    rows = []
    for label, run in (("in-process, batch 1", lambda: [backend.complete_batch([r])[0] for r in requests]),
                       (f"in-process, batch {len(requests)}", lambda: backend.complete_batch(requests))):
        started = time.perf_counter()
        replies = run()
        seconds = time.perf_counter() - started
        rows.append((label, seconds, replies))
    if args.served:
        rows += served(model, requests, args.threads)
    same = sum(a.text == b.text for a, b in zip(rows[0][2], rows[1][2]))
    print(f"SmolLM2-135M-Instruct, {args.requests} sampled requests (T=1.0, top-p 0.95, <= {args.max_tokens} "
          f"new tokens), {args.threads} thread(s)\n")
    print("| generation | seconds | requests/s | generated tokens/s |\n|---|---|---|---|")
    for label, seconds, replies in rows:
        tokens = sum(r.completion_tokens for r in replies)
        print(f"| {label} | {seconds:.1f} | {len(replies) / seconds:.2f} | {tokens / seconds:.1f} |")
    print(f"\nreplies identical alone and in the batch: {same} of {args.requests}")


def served(model: str, requests: list, threads: int) -> list:
    """(label, seconds, replies) through transformers serve: one request at a time, then all at once."""
    rows = []
    for batching in (False, True):
        name = "transformers serve" + (" --continuous-batching" if batching else "")
        with tempfile.TemporaryDirectory() as folder, \
                TransformersServe(model, Path(folder) / "log", batching, threads) as server:
            for in_flight in (1, len(requests)):
                started = time.perf_counter()
                replies = asyncio.run(ask(server, requests, in_flight))
                rows.append((f"{name}, {in_flight} in flight", time.perf_counter() - started, replies))
    return rows


async def ask(server: TransformersServe, requests: list, in_flight: int) -> list:
    backend = OpenAIBackend(server.model, server.base_url, api_key_env=None, timeout_s=900)
    await backend.open()
    gate = asyncio.Semaphore(in_flight)

    async def one(request):
        async with gate:
            return await backend.acomplete(request)

    try:
        return await asyncio.gather(*(one(r) for r in requests))
    finally:
        await backend.close()


if __name__ == "__main__":
    main()
