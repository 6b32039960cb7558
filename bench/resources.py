"""The arithmetic a GPU would do, done ahead (runners/plan.py): a student's parameters from its config,
the memory one GPU holds while training it, the FLOPs and GPU-hours of a cell, the teacher's tokens
and dollars. Estimates, stated with their assumptions:

- weights, gradients and AdamW's two moments take the weights' bytes each (fp32 master weights, the
  default, make 16 bytes a parameter; pure bf16 8); FSDP full shard divides them by the GPUs; autocast
  keeps a bf16 copy of the weights it uses (of one layer at a time under FSDP); DDP adds gradient buckets
- activations are bf16 at the longest sequence (train.max_length), fused attention (no s^2 term): per
  token and layer 16h + 8i bytes for a Llama-style layer (Korthikanti et al. 2022's count, SwiGLU MLP),
  2h with activation checkpointing plus one layer recomputed; the logits take 10 bytes a vocabulary
  entry a token (bf16 output, fp32 copy for the loss, its gradient); 1.5 GiB of CUDA context
- training costs 6 FLOPs a parameter a token (4 with LoRA: no weight gradients), 2 more when
  activations are recomputed; generation 2 a parameter a token, at compute.generation_mfu
- text is ~4 characters a token."""

import math
from dataclasses import dataclass, field

from bench.errors import BenchError, first_line

GIB = 2**30
CHARS_PER_TOKEN = 4
CUDA_CONTEXT = 1.5 * GIB


@dataclass
class Shape:
    parameters: int
    trainable: int
    hidden: int
    intermediate: int
    layers: int
    vocab: int

    @property
    def layer_parameters(self) -> int:
        return (self.parameters - self.vocab * self.hidden) // max(1, self.layers)


def student_shape(student) -> Shape:
    """Parameters and sizes of `student` (a StudentConfig) without its weights: its model built on the
    meta device from `architecture` (scratch), `shape` (a pretrained model's config.json fields, so
    planning needs no download), or the checkpoint's config (Hub or local path)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    if student.pretrained and student.shape:
        shape = dict(student.shape)
        config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    elif student.pretrained:
        try:
            config = AutoConfig.from_pretrained(student.pretrained)
        except (OSError, ValueError) as error:
            raise BenchError(f"student {student.name}: cannot read {student.pretrained}'s config "
                             f"({first_line(error)}); give its sizes in student.shape "
                             "(conf/student/7b.yaml shows how), or allow Hub access") from None
    else:
        config = LlamaConfig(vocab_size=student.tokenizer_vocab_size, **student.architecture)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    trainable = parameters
    if student.lora.enabled:  # r x (in + out) for each targeted projection of each layer
        lora, output = student.lora, model.get_output_embeddings()
        targets = [
            m
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)
            and m is not output
            and (lora.target_modules == "all-linear" or name.split(".")[-1] in lora.target_modules)
        ]
        trainable = sum(lora.r * (m.in_features + m.out_features) for m in targets)
    return Shape(
        parameters,
        trainable,
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        config.vocab_size,
    )


@dataclass
class Memory:
    """Bytes one GPU holds at its peak while training."""

    parts: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def training_memory(
    shape: Shape,
    *,
    gpus: int,
    fsdp: bool,
    weight_bytes: int,
    mixed_precision: bool,
    batch: int,
    length: int,
    checkpointing: bool,
) -> Memory:
    """Per GPU: weights, gradients, optimizer state, compute copies, activations, logits, context."""
    shard = gpus if fsdp else 1
    state_bytes = weight_bytes  # AdamW's moments in the weights' dtype
    parts = {
        "weights": shape.parameters * weight_bytes / shard,
        "gradients": shape.trainable * weight_bytes / shard,
        "optimizer": 2 * shape.trainable * state_bytes / shard,
    }
    if mixed_precision and weight_bytes > 2:  # autocast's bf16 copies: all weights, or FSDP's gathered units
        parts["bf16 copies"] = 2 * (2 * shape.layer_parameters if fsdp else shape.parameters)
    if fsdp and gpus > 1:  # a unit's full weights gathered for its forward and backward (and the next's)
        parts["gathered units"] = 2 * shape.layer_parameters * weight_bytes
    if gpus > 1 and not fsdp:
        parts["DDP buckets"] = shape.trainable * weight_bytes
    tokens = batch * length
    per_layer = 16 * shape.hidden + 8 * shape.intermediate  # bytes a token, bf16
    scale = 1 if mixed_precision else 2  # fp32 activations without autocast
    if checkpointing:
        parts["activations"] = scale * tokens * (shape.layers * 2 * shape.hidden + per_layer)
    else:
        parts["activations"] = scale * tokens * shape.layers * per_layer
    parts["logits"] = 10 * tokens * shape.vocab
    parts["CUDA context"] = CUDA_CONTEXT
    return Memory(parts)


def training_flops(shape: Shape, tokens: float, checkpointing: bool) -> float:
    per_token = (6 if shape.trainable == shape.parameters else 4) + (2 if checkpointing else 0)
    return per_token * shape.parameters * tokens


def generation_flops(shape: Shape, tokens: float) -> float:
    return 2 * shape.parameters * tokens


def gpu_seconds(flops: float, peak_tflops: float, utilisation: float) -> float:
    return flops / (peak_tflops * 1e12 * utilisation)


def tokens_of(text_chars: float) -> float:
    return math.ceil(text_chars / CHARS_PER_TOKEN)
