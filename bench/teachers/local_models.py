"""Teachers that run in this process: a transformers model (any `from_pretrained` path) or vLLM's
offline engine (an optional extra, imported only when chosen)."""

from collections import defaultdict

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria

from bench.errors import BenchError
from bench.students import torch_dtype
from bench.teachers.backend import LocalBackend, Request, Response
from bench.teachers.cache import cache_key


def request_seed(backend: str, model: str, request: Request) -> int:
    """A sampling seed that is a function of the request alone, so answers do not depend on batching."""
    return int(cache_key(request.identity(backend, model))[:8], 16)


class StopStrings(StoppingCriteria):
    """A row is done once its reply holds a stop string. transformers' own `stop_strings` also match across
    the prompt's end (a reply "2." after a prompt ending in a newline matches "\n2."); the OpenAI API
    and vLLM match within the reply only, as this does."""

    def __init__(self, tokenizer, stop: tuple, prompt_length: int):
        self.tokenizer, self.stop, self.prompt_length = tokenizer, stop, prompt_length

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        replies = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        done = [any(s in reply for s in self.stop) for reply in replies]
        return torch.tensor(done, device=input_ids.device)


class RowSampler(LogitsProcessor):
    """Sampling with one generator per row, seeded from its request's key: a reply depends on its request
    alone, not on what else is in the batch (one seed for the whole batch made the same request give
    another answer alone, first of two, or second of two). It applies temperature and top-p itself and
    leaves one token possible per row, so generate() runs greedy over its choice."""

    def __init__(self, seeds: list, temperature: float, top_p: float, device):
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1:  # the smallest set of tokens whose probability reaches top_p
            ordered, order = probs.sort(dim=-1, descending=True)
            outside = ordered.cumsum(dim=-1) - ordered > self.top_p
            probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
        chosen = torch.cat([torch.multinomial(row, 1, generator=generator)
                            for row, generator in zip(probs, self.generators)])
        only = torch.full_like(scores, float("-inf"))
        return only.scatter(-1, chosen[:, None], 0.0)


class HFBackend(LocalBackend):
    name = "hf"

    def __init__(self, model: str, dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype(dtype)).to(device).eval()
        self._compiler, self._grammars = None, {}  # structured replies: one compiled grammar a schema

    def _render(self, request: Request) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(list(request.messages), tokenize=False,
                                                      add_generation_prompt=True)
        # a base model without a chat template reads the conversation as plain text
        turns = "\n\n".join(f"{m['role']}: {m['content']}" for m in request.messages)
        return f"{turns}\n\nassistant:"

    @torch.no_grad()
    def complete_batch(self, requests: list) -> list:
        # one generate() per group of equal sampling parameters, rows in request order
        groups = defaultdict(list)
        for i, request in enumerate(requests):
            # a structured reply ends where its schema does: no stop string may cut it short
            stop = () if request.schema else request.stop
            groups[(request.temperature, request.top_p, request.max_tokens, stop, request.schema)].append(i)
        responses: list = [None] * len(requests)
        eos = self.tokenizer.eos_token_id
        for (temperature, top_p, max_tokens, stop, schema), rows in groups.items():
            texts = [self._render(requests[i]) for i in rows]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(self._model.device)
            seeds = [request_seed(self.name, self.model, requests[i]) for i in rows]
            sampler = [RowSampler(seeds, temperature, top_p, self._model.device)] if temperature > 0 else []
            sampler = [*self._grammar(schema), *sampler]  # the schema's tokens first, then the sample
            prompt_length = batch["input_ids"].shape[1]
            criteria = [StopStrings(self.tokenizer, stop, prompt_length)] if stop else None
            output = self._model.generate(
                **batch, max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=criteria, do_sample=False, logits_processor=LogitsProcessorList(sampler),
                temperature=None, top_p=None, top_k=None,
            )
            for row, i in enumerate(rows):
                new = output[row, prompt_length:].tolist()
                stopped = eos in new
                new = new[: new.index(eos)] if stopped else new
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                cut = min((text.index(s) for s in stop if s in text), default=None)
                if cut is not None:  # the stop string ends the reply and is not part of it
                    text, stopped = text[:cut], True
                responses[i] = Response(
                    text=text,
                    finish_reason="stop" if stopped else "length",
                    prompt_tokens=int(batch["attention_mask"][row].sum()),
                    completion_tokens=len(new),
                )
        return responses

    def _grammar(self, schema: str | None) -> list:
        """The logits processor that keeps a reply to `schema` (xgrammar's: compiled once per schema,
        its token masks computed in C++; docs/teachers.md says how it was chosen), or none."""
        if schema is None:
            return []
        try:
            import xgrammar
        except ImportError:
            raise BenchError("teacher.structured=true with an in-process model needs xgrammar: pip install "
                             "'synthbench-llm[structured]'") from None
        if schema not in self._grammars:
            if self._compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer,
                                                               vocab_size=self._model.config.vocab_size)
                self._compiler = xgrammar.GrammarCompiler(info)
            self._grammars[schema] = self._compiler.compile_json_schema(schema, any_whitespace=False)
        return [xgrammar.contrib.hf.LogitsProcessor(self._grammars[schema])]


class VLLMBackend(LocalBackend):
    name = "vllm"

    def __init__(self, model: str, dtype: str = "auto", tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None):
        try:
            from vllm import LLM
        except ImportError:
            raise BenchError("teacher=vllm needs vLLM on a GPU machine: pip install 'synthbench-llm[vllm]', "
                             "or serve the model with `vllm serve` and use teacher=vllm_server") from None
        self.model = model
        self._llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                        gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)

    def complete_batch(self, requests: list) -> list:
        from vllm import SamplingParams

        if any(r.schema for r in requests):  # not built: answering free text would read as unparseable
            raise BenchError("teacher.structured=true with teacher=vllm (in process) is not supported yet: "
                             "serve the model (`vllm serve`, teacher=vllm_server: response_format) or set "
                             "teacher.structured=false")

        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                                 stop=list(r.stop) or None, seed=request_seed(self.name, self.model, r))
                  for r in requests]
        outputs = self._llm.chat([list(r.messages) for r in requests], params, use_tqdm=False)
        return [
            Response(text=out.outputs[0].text, finish_reason=out.outputs[0].finish_reason or "stop",
                     prompt_tokens=len(out.prompt_token_ids), completion_tokens=len(out.outputs[0].token_ids))
            for out in outputs
        ]
