"""How an in-process model keeps to a JSON schema, on this machine: the real SmolLM2-135M teacher answers
N TREC questions (the answer step, T = 0.7) free, through xgrammar's logits processor (what the `hf`
backend uses with teacher.structured=true), through llguidance's and through lm-format-enforcer's; per
way, the seconds, the share of replies that are the schema's JSON and the share whose label is in the
label set.

    python -m runners.benchmarks.structured [--requests 32] [--repeat 2]"""

import argparse
import json
import time
from dataclasses import replace
from functools import cache

import torch

from bench.config_store import register_configs
from bench.steps import ANSWER, structured_fields
from bench.strategies import build_strategy
from bench.strategies.base import source_fields
from bench.tasks import load_task


def enforcer(backend, schema: str):
    """lm-format-enforcer's prefix function, as a logits processor (transformers adds those first)."""
    from lmformatenforcer import JsonSchemaParser
    from lmformatenforcer.integrations.transformers import build_transformers_prefix_allowed_tokens_fn
    from transformers import PrefixConstrainedLogitsProcessor

    allowed = build_transformers_prefix_allowed_tokens_fn(backend.tokenizer,
                                                          JsonSchemaParser(json.loads(schema)))
    return [PrefixConstrainedLogitsProcessor(allowed, num_beams=1)]


@cache
def llguidance_tokenizer(tokenizer):
    """Built once per tokenizer (~5 s here), as xgrammar's compiler is."""
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)


def guidance(backend, schema: str) -> list:
    """llguidance's matcher a row (Rust, 3 MB wheel, no triton), as a logits processor."""
    import llguidance
    import llguidance.torch as masks
    from transformers import LogitsProcessor

    tokenizer = llguidance_tokenizer(backend.tokenizer)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})

    class Guided(LogitsProcessor):
        def __init__(self):
            self.matchers = []

        def __call__(self, input_ids, scores):
            if not self.matchers:  # the first step: nothing generated yet
                self.matchers = [llguidance.LLMatcher(tokenizer, grammar) for _ in range(len(input_ids))]
                self.bitmask = masks.allocate_token_bitmask(len(input_ids), tokenizer.vocab_size)
            else:
                for matcher, token in zip(self.matchers, input_ids[:, -1].tolist(), strict=True):
                    if not matcher.is_stopped():
                        matcher.consume_token(token)
            for row, matcher in enumerate(self.matchers):
                masks.fill_next_token_bitmask(matcher, self.bitmask, row)
            masks.apply_token_bitmask_inplace(scores, self.bitmask)
            return scores

    return [Guided()]


def measure(args) -> None:
    from hydra import compose, initialize_config_dir

    from bench.config import conf_dir, validated
    from bench.model_store import offline_or_hub
    from bench.teachers.local_models import HFBackend

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["task=trec", "strategy=answer_augmentation", "logger=none"])
    config = validated(cfg)
    data = load_task(config.task, config.data_dir)
    strategy = build_strategy(cfg.strategy)
    strategy.max_tokens = 32
    strategy.choose_worked_example(data.train[:50])  # the prompt a cell sends: a seed worked example
    schema = ANSWER.schema(strategy.template(ANSWER, data), config.task.labels)
    backend = HFBackend(offline_or_hub("HuggingFaceTB/SmolLM2-135M-Instruct"))
    # each way's grammar hook, in place of the backend's (xgrammar's); free text sends no schema
    ways = {"free text": None, "xgrammar": backend._grammar,
            "llguidance": lambda s: guidance(backend, s) if s else [],
            "lm-format-enforcer": lambda s: enforcer(backend, s) if s else []}
    print(f"{args.requests} answer requests, TREC, SmolLM2-135M-Instruct on {torch.get_num_threads()} "
          "threads\n")
    print("| way | seconds (runs) | the schema's JSON | label in the set |")
    print("|---|---|---|---|")
    for way, hook in ways.items():
        seconds, valid, in_set = [], 0, 0
        if hook:
            backend._grammar = hook
        for run in range(args.repeat):
            requests = [strategy.request(ANSWER, data, source_fields(e, data), run)
                        for e in data.train[:args.requests]]
            if hook:
                requests = [replace(r, schema=schema) for r in requests]
            started = time.perf_counter()
            try:
                replies = backend.complete_batch(requests)
            except ImportError as error:  # a library that does not load with this transformers
                print(f"| {way} | does not load: {str(error).splitlines()[0][:90]} | | |", flush=True)
                break
            seconds.append(time.perf_counter() - started)
            for reply in replies:  # read as the pipeline reads it: JSON, or the prompt's patterns
                fields = structured_fields(reply.text)
                valid += fields is not None and set(fields) == {"label"}
                fields = fields or strategy.matched(ANSWER, data, reply.text) or {}
                read, _ = data.kind.read_reply(fields, config.task.labels)
                in_set += bool(read and read.get("label") in config.task.labels)
        if not seconds:
            continue
        n = args.requests * args.repeat
        print(f"| {way} | {' / '.join(f'{s:.1f}' for s in seconds)} | {valid / n:.0%} | {in_set / n:.0%} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runners.benchmarks.structured", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2)
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
