"""Fine-tuning through transformers' Trainer, so FSDP, DeepSpeed and multi-GPU come from
`accelerate launch` / `torchrun` and `train.trainer_args`. What the suite adds: the loss is on the
target tokens only (prompt masked, as LLM2LLM), batches carry no padding (train.batching), and the
tokens trained on are counted."""

import contextlib
import io
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

with contextlib.redirect_stdout(io.StringIO()):  # its import prints "[INFO] Running in WANDB offline mode"
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

from bench import interrupts
from bench.config import Batching, TrainConfig
from bench.errors import BenchError
from bench.tasks import Example

IGNORE = -100  # label id the loss skips


def encode(examples: Sequence[Example], tokenizer, max_length: int) -> list[dict]:
    """Token ids of prompt + ' ' + target + EOS, labels masked over the prompt. The split point is
    the prompt's own encoding, as lm-eval splits context from continuation. Too-long examples lose
    prompt tokens from the left, never target tokens."""
    prompts = tokenizer([e.prompt for e in examples])["input_ids"]
    wholes = tokenizer([f"{e.prompt} {e.target}" for e in examples])["input_ids"]
    features = []
    for prompt_ids, whole in zip(prompts, wholes):
        ids = whole + [tokenizer.eos_token_id]
        labels = [IGNORE] * len(prompt_ids) + ids[len(prompt_ids):]
        ids, labels = ids[-max_length:], labels[-max_length:]
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return features


class TokenCount:
    """The real and padded tokens of the batches a collator made."""

    real_tokens = 0
    padded_tokens = 0


class PaddedBatches(TokenCount, DataCollatorForSeq2Seq):
    """Each batch padded to its longest example."""

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        real = int(batch["attention_mask"].sum())
        self.real_tokens += real
        self.padded_tokens += batch["attention_mask"].numel() - real
        return batch


class PaddingFreeBatches(TokenCount, DataCollatorWithFlattening):
    """Each batch as one row: its examples end to end, positions restarting at each one, from which
    transformers builds a block-diagonal causal mask (no token attends across examples), each example's
    first label ignored. The vocabulary projection runs only where a target token is predicted
    (`logits_to_keep`, with the labels they predict as `shift_labels`): a classification example's
    prompt is most of its tokens. Same tokens, same loss as padded batches, less to compute."""

    def __call__(self, features, return_tensors=None, separator_id=None):
        batch = super().__call__(features, return_tensors, separator_id)
        self.real_tokens += batch["input_ids"].numel()
        batch["use_cache"] = False  # with a KV cache, transformers ignores the positions' boundaries
        predicting = (batch["labels"][0, 1:] != IGNORE).nonzero().flatten()  # the next token is a target
        batch["logits_to_keep"], batch["shift_labels"] = predicting, batch["labels"][:, predicting + 1]
        return batch


def collator(cfg: TrainConfig, tokenizer) -> TokenCount:
    if cfg.batching == Batching.padding_free:
        return PaddingFreeBatches()
    return PaddedBatches(tokenizer, padding="longest", label_pad_token_id=IGNORE,
                         pad_to_multiple_of=8 if torch.cuda.is_available() else None)


@dataclass
class TrainStats:
    examples: int
    steps: int
    seconds: float
    train_loss: float
    real_tokens: int
    padded_tokens: int
    averaged_steps: int = 0  # the optimizer steps whose weights were averaged (train.average_weights)
    sharded_over: int = 1  # the ranks each weight was split over while training (FSDP); 1: whole weights

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds

    @property
    def padding_share(self) -> float:
        return self.padded_tokens / max(1, self.real_tokens + self.padded_tokens)


def autocast(cfg: TrainConfig, weights: torch.dtype) -> str:
    """The compute precision over the weights: train.mixed_precision, where `auto` is bf16 on a GPU that
    supports it; bf16 weights (student.dtype=bfloat16) compute in bf16 whatever the setting."""
    if weights == torch.bfloat16:
        return "bf16"
    if cfg.mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return str(cfg.mixed_precision)


def batch_split(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps): the effective batch is the recipe's whatever the
    number of processes, N ranks split it."""
    per_device = max(1, min(cfg.per_device_batch_size, cfg.effective_batch_size // world_size))
    return per_device, max(1, round(cfg.effective_batch_size / (per_device * world_size)))


def sharding_arguments(cfg: TrainConfig, sharding: str, world_size: int) -> dict:
    """FSDP full shard over the ranks (compute.sharding=fsdp): each decoder layer its own unit (the
    model's `_no_split_modules`), activation checkpointing done by FSDP, the full weights gathered on
    save. One rank, or sharding=none, trains replicas (DDP over several ranks)."""
    if sharding != "fsdp" or world_size == 1:
        return {"activation_checkpointing": cfg.activation_checkpointing}
    fsdp = {"reshard_after_forward": True,  # full shard
            "activation_checkpointing": cfg.activation_checkpointing,
            "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": True}
    return {"fsdp": True, "fsdp_config": fsdp}


def optimizer_steps(cfg: TrainConfig, examples: int, world_size: int = 1) -> int:
    """The optimizer steps `examples` give under the recipe (the Trainer's count: whole batches per epoch,
    a last partial accumulation included)."""
    per_device, accumulation = batch_split(cfg, world_size)
    batches = math.ceil(examples / (per_device * world_size))
    return math.ceil(cfg.epochs * math.ceil(batches / accumulation))


def warmup_steps(cfg: TrainConfig, steps: int) -> int:
    """⌊warmup_ratio × steps⌋. The Trainer rounds a ratio up, so a 3-step run (LLM2LLM's recipe on 100
    examples) spent its first step at lr 0: a third of its training."""
    return int(cfg.warmup_ratio * steps)


def training_arguments(
    cfg: TrainConfig, output_dir: Path, precision: str, sharding: str = "none", examples: int | None = None
) -> TrainingArguments:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    per_device, accumulation = batch_split(cfg, world_size)
    steps = optimizer_steps(cfg, examples, world_size) if examples is not None else None
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        # a share of the steps when the number of examples is unknown (the Trainer rounds it up)
        warmup_steps=warmup_steps(cfg, steps) if steps is not None else cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        train_sampling_strategy="group_by_length" if cfg.batching == Batching.by_length else "random",
        **sharding_arguments(cfg, sharding, world_size),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        seed=cfg.seed,
        save_strategy="no",
        logging_steps=0.1,  # ten loss points per run
        report_to=["none"],  # the suite logs the curve per iteration (bench/tracking.py TrainingProgress)
        disable_tqdm=True,  # its own bar, on a terminal only
        dataloader_num_workers=0,
        **cfg.trainer_args,
    )


class SuiteTrainer(Trainer):
    """The Trainer, with FSDP on CPU ranks too. accelerate turns its FSDP plugin on only for accelerators'
    ranks (on CPU ranks it trains DDP replicas and says nothing), though torch's fully_shard shards CPU
    ranks over gloo: there the suite turns accelerate's FSDP2 path on itself, so `compute=cpu
    compute.processes=2 compute.sharding=fsdp` runs the code 7B students run on GPUs."""

    sharded_cpu_ranks = False

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        if self.args.fsdp_plugin_args is not None and state.distributed_type == DistributedType.MULTI_CPU:
            state.distributed_type = DistributedType.FSDP
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            self.is_fsdp_enabled = self.sharded_cpu_ranks = True

    def full_weights(self, folder: Path):
        """The trained weights whole, on every rank: rank 0 gathers the shards (to CPU, one weight at a
        time) and saves them as an HF folder in its run folder, which each rank loads unsharded to score
        (the ranks of a node, or of nodes sharing the run's file system)."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # rank 0 alone holds them
        whole = get_model_state_dict(self.model, options=options)
        if self.args.should_save:
            self.model.save_pretrained(folder, state_dict=whole)
        saved = [str(folder)]
        torch.distributed.broadcast_object_list(saved, src=0)  # each rank has a run folder: rank 0's
        folder = saved[0]
        if self.sharded_cpu_ranks:  # accelerate's state and its flag are shared: a later Accelerator
            self.accelerator.state.distributed_type = DistributedType.MULTI_CPU  # (lm-eval's) must see the
            self.accelerator.state.fsdp_plugin = None  # CPU ranks as they are
            os.environ.pop("ACCELERATE_USE_FSDP", None)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


class StopOnSignal(TrainerCallback):
    """A Ctrl-C or SIGTERM a finalizer swallowed mid-training stops training at the next step
    (bench/interrupts.py)."""

    def on_step_end(self, args, state, control, **kwargs):
        interrupts.raise_if_stopped()


class WeightAverage(TrainerCallback):
    """The running mean of the trainable weights after each of the last `share` of the optimizer steps,
    copied into the model when training ends: tail (Polyak) averaging, which Signal and Noise finds lowers
    a score's run-to-run noise. It averages the parameters this process holds: under FSDP each rank its
    shard, elementwise as the whole would be; kept in fp32 beside them (one more copy of the trainable
    weights in memory)."""

    def __init__(self, share: float):
        self.share, self.first, self.mean, self.steps = share, 0, None, 0

    @staticmethod
    def trained(model) -> list[torch.Tensor]:
        return [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only

    def on_train_begin(self, args, state, control, **kwargs):
        self.first = state.max_steps - max(1, round(self.share * state.max_steps)) + 1

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step < self.first:
            return
        self.steps += 1
        if self.mean is None:
            self.mean = [p.detach().float().clone() for p in self.trained(model)]
        else:
            for mean, p in zip(self.mean, self.trained(model)):
                mean.lerp_(p.float(), 1 / self.steps)  # mean += (p - mean) / n

    @torch.no_grad()
    def on_train_end(self, args, state, control, model=None, **kwargs):
        for mean, p in zip(self.mean or [], self.trained(model)):
            p.copy_(mean)


def finetune(model, tokenizer, examples: Sequence[Example], cfg: TrainConfig, output_dir: Path,
             progress: TrainerCallback | None = None, sharding: str = "none"):
    """Train `model` in place on `examples`; return it (ready to score) with the run's figures."""
    features = encode(examples, tokenizer, cfg.max_length)
    precision = autocast(cfg, next(model.parameters()).dtype)
    batches = collator(cfg, tokenizer)
    averaging = WeightAverage(cfg.average_weights) if cfg.average_weights > 0 else None
    trainer = SuiteTrainer(
        model=model,
        args=training_arguments(cfg, output_dir, precision, sharding, len(features)),
        train_dataset=features,
        data_collator=batches,
        callbacks=[c for c in (progress, averaging, StopOnSignal()) if c],
    )
    trainer.remove_callback(PrinterCallback)  # it prints each log dict to stdout
    if "fsdp" in sharding_arguments(cfg, sharding, int(os.environ.get("WORLD_SIZE", "1"))) and \
            not trainer.is_fsdp_enabled:  # accelerate turns FSDP off silently where it cannot shard
        raise BenchError("compute.sharding=fsdp was asked for but the Trainer would train unsharded: "
                         "launch the cell on several ranks (torchrun --nproc_per_node N), or set "
                         "compute.sharding=none")
    if averaging and trainer.is_deepspeed_enabled:  # ZeRO partitions the weights out of the module's view
        raise BenchError("train.average_weights does not work under DeepSpeed: train with FSDP "
                         "(compute=4gpu_fsdp) or set train.average_weights=0")
    started = time.perf_counter()
    result = trainer.train()
    sharded_over = max(getattr(p, "device_mesh", None) and p.device_mesh.size() or 1
                       for p in trainer.model.parameters())  # DTensor parameters: FSDP's shards
    model = trainer.full_weights(output_dir / "full_weights") if trainer.is_fsdp_enabled else trainer.model
    stats = TrainStats(
        examples=len(features),
        steps=result.global_step,
        seconds=time.perf_counter() - started,
        train_loss=result.training_loss,
        real_tokens=batches.real_tokens,
        padded_tokens=batches.padded_tokens,
        averaged_steps=averaging.steps if averaging else 0,
        sharded_over=sharded_over,
    )
    return model, stats
