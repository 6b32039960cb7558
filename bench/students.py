"""Students: a pretrained checkpoint (`from_pretrained`, Hub id or local path) or a small Llama
built from config with a BPE tokenizer trained on the task's training text (no download).
`Student.base_model()` always returns the base weights, so every training run starts there."""

from collections.abc import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from bench.config import StudentConfig
from bench.errors import BenchError, first_line

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def torch_dtype(name: str) -> torch.dtype:
    """For inference (the hf teacher): 'auto' is bf16 on a GPU that supports it, fp32 otherwise."""
    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that prepends <s> like Llama's; trains in about a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def cannot_load(cfg: StudentConfig, error: Exception) -> BenchError:
    """Not on the Hub, no network, gated without HF_TOKEN (OSError), or a folder without a model
    (ValueError): one line."""
    return BenchError(f"student {cfg.name}: cannot load {cfg.pretrained} ({first_line(error)}); check the id "
                      "or path (a folder needs config.json, the weights and the tokenizer), the network, "
                      "and HF_TOKEN for gated models")


class Student:
    def __init__(self, cfg: StudentConfig, training_texts: Iterable[str] | None = None):
        self.cfg = cfg
        # training keeps fp32 master weights unless a dtype is named (bfloat16: pure-bf16 training)
        self.dtype = torch.float32 if cfg.dtype == "auto" else torch_dtype(cfg.dtype)
        if cfg.pretrained:
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(cfg.pretrained)
            except (OSError, ValueError) as error:
                raise cannot_load(cfg, error) from None
            if self.tokenizer.pad_token is None:  # Pythia and Llama-2 ship none
                self.tokenizer.pad_token = self.tokenizer.eos_token
        else:
            if not cfg.architecture:
                raise BenchError(f"student {cfg.name}: set student.pretrained or student.architecture")
            if training_texts is None:
                raise BenchError(f"student {cfg.name} is built from scratch and needs training text")
            self.tokenizer = train_bpe_tokenizer(training_texts, cfg.tokenizer_vocab_size)

    def base_model(self) -> torch.nn.Module:
        """A fresh copy of the base weights (with LoRA adapters when switched on)."""
        if self.cfg.pretrained:
            try:
                model = AutoModelForCausalLM.from_pretrained(self.cfg.pretrained, dtype=self.dtype)
            except (OSError, ValueError) as error:
                raise cannot_load(self.cfg, error) from None
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.init_seed)
                model = LlamaForCausalLM(self.scratch_config()).to(self.dtype)
        return self.with_lora(model)

    def scratch_config(self) -> LlamaConfig:
        return LlamaConfig(vocab_size=len(self.tokenizer), bos_token_id=self.tokenizer.bos_token_id,
                           eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id,
                           **self.cfg.architecture)

    def with_lora(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.cfg.lora.enabled:
            return model
        from peft import LoraConfig, get_peft_model

        lora = self.cfg.lora
        settings = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                              target_modules=lora.target_modules, task_type="CAUSAL_LM")
        try:
            return get_peft_model(model, settings)
        except ValueError as error:
            linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                             if isinstance(module, torch.nn.Linear)})
            raise BenchError(f"student.lora.target_modules={lora.target_modules} does not fit the "
                             f"{self.cfg.name} student ({first_line(error, 120)}); its linear "
                             f"layers are {', '.join(linear)}: name some, or use all-linear") from None

    def check(self) -> None:
        """LoRA's target modules matched on a weightless copy of the model, before any query or training."""
        if not self.cfg.lora.enabled:
            return
        from accelerate import init_empty_weights

        pretrained = self.cfg.pretrained
        config = AutoConfig.from_pretrained(pretrained) if pretrained else self.scratch_config()
        with init_empty_weights():
            self.with_lora(AutoModelForCausalLM.from_config(config))


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
