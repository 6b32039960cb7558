"""Tasks as data: a task YAML says where the records are (release files or the Hub), how a record
becomes a student prompt and target, the label set and how a prediction is scored. Nothing here
is specific to one task, so a new task is one YAML file."""

import codecs
import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2

from bench.config import TaskConfig
from bench.errors import BenchError, first_line
from bench.store import digest
from bench.task_kinds import TaskKind, task_kind

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@dataclass(frozen=True)
class Example:
    id: str  # '<split>-<position in the split>', stable across runs
    prompt: str  # what the student sees; ends with the task's cue
    target: str  # what it must write: the label, or the worked solution
    label: str  # the class label, or the final number of a math solution
    record: dict[str, Any] = field(default_factory=dict, compare=False)  # the raw columns


@dataclass
class TaskData:
    config: TaskConfig
    train: list[Example]
    test: list[Example]
    source: str  # where the records came from, for the run record
    dropped_test_overlap: int = 0  # training examples removed because a test prompt equals them

    @property
    def kind(self) -> TaskKind:
        return task_kind(self.config.kind)

    @cached_property
    def digest(self) -> str:
        """What was loaded (the train pool and the test split): part of every cell and stage key, so
        changed or missing data is never mistaken for the data a stored result was computed on."""
        return digest({split: [(e.id, e.prompt, e.target) for e in examples]
                       for split, examples in (("train", self.train), ("test", self.test))})

    @property
    def majority_rate(self) -> float:
        """Accuracy of always answering the test split's most frequent label."""
        counts = Counter(example.label for example in self.test)
        return counts.most_common(1)[0][1] / len(self.test)


def question_of(example: Example, task: TaskData) -> str:
    """The example's input text, as a teacher sees it: its prompt without the instruction and the cue."""
    return question_in(example.prompt, task.config)


def question_in(prompt: str, cfg: TaskConfig) -> str:
    return prompt.removeprefix(cfg.instruction).removesuffix(cfg.cue_separator + cfg.cue)


def student_prompt(cfg: TaskConfig, question: str, instruction: str | None = None) -> str:
    """What the student reads: the task's instruction (or another, such as the scoring one), the
    question, the cue."""
    instruction = cfg.instruction if instruction is None else instruction
    return f"{instruction}{question.strip()}{cfg.cue_separator}{cfg.cue}"


def template_text(cfg: TaskConfig) -> str:
    """The Jinja template a record's question is rendered from."""
    return cfg.doc_to_text or f"{{{{ {cfg.text_column} }}}}"


def load_task(cfg: TaskConfig, data_dir: str | None) -> TaskData:
    records, origins, source = _read_records(cfg, data_dir)
    template = _JINJA.from_string(template_text(cfg))
    splits = {
        split: [_to_example(cfg, template, split, i, record, origins[split]) for i, record in enumerate(rows)]
        for split, rows in records.items()
    }
    for split, examples in splits.items():
        if not examples:
            raise BenchError(f"task {cfg.name}: the {split} split ({origins[split]}) has no records; "
                             "point the task at a file with data")
        if not any(question_in(e.prompt, cfg).strip() for e in examples):  # a typo'd field, say
            raise BenchError(f"task {cfg.name}: the prompt template {template_text(cfg)!r} renders empty for "
                             f"every record of the {split} split ({origins[split]}); its columns are "
                             f"{sorted(examples[0].record)}: fix task.doc_to_text (or task.text_column)")
    # The test split must never reach training or generation, also through an exact copy.
    test_prompts = {example.prompt for example in splits["test"]}
    train = [example for example in splits["train"] if example.prompt not in test_prompts]
    if not train:
        raise BenchError(f"task {cfg.name}: every training example is a copy of a test example; "
                         "check that train and test point at different files")
    return TaskData(cfg, train, splits["test"], source, len(splits["train"]) - len(train))


# -- reading records -------------------------------------------------------------------------------


def _read_records(cfg: TaskConfig, data_dir: str | None):
    """Records per split, where each split came from (for error messages), and the source."""
    splits = ("train", "test")
    local = cfg.local
    if local is not None and (data_dir or all(Path(p).is_absolute() for p in _local_paths(local))):
        root = Path(data_dir or "/")
        origins = {split: ", ".join(str(root / p) for p in _local_paths(local, split)) for split in splits}
        return {split: _read_local(cfg, root, split) for split in splits}, origins, f"local:{root}"
    if cfg.hub is not None:
        origins = {split: f"hub:{cfg.hub.path}[{getattr(cfg.hub, f'{split}_split')}]" for split in splits}
        return {split: _read_hub(cfg, split) for split in splits}, origins, f"hub:{cfg.hub.path}"
    raise BenchError(
        f"task {cfg.name} has no Hub source and no data root is set: "
        "export BENCH_DATA_DIR=<folder with the release files> or pass data_dir=..."
    )


def _local_paths(local, *splits: str) -> list[str]:
    paths = []
    for split in splits or ("train", "test"):
        spec = getattr(local, split)
        paths.extend(spec.values() if isinstance(spec, dict) else [spec])
    return [str(p) for p in paths]


def _existing(root: Path, relative: str, task: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise BenchError(
            f"task {task}: data file {path} not found; point BENCH_DATA_DIR (or data_dir=) "
            f"at the folder that holds {relative}"
        )
    return path


def _read_local(cfg: TaskConfig, root: Path, split: str) -> list[dict]:
    local = cfg.local
    spec = getattr(local, split)
    if local.format == "parallel_lines":  # one file per column, records line by line
        columns = {
            column: _read_text(_existing(root, path, cfg.name), local.encoding, cfg.name).splitlines()
            for column, path in spec.items()
        }
        lengths = {column: len(lines) for column, lines in columns.items()}
        if len(set(lengths.values())) != 1:
            raise BenchError(f"task {cfg.name}: the {split} files have different line counts {lengths}")
        return [dict(zip(columns, values)) for values in zip(*columns.values())]

    path = _existing(root, spec, cfg.name)
    text = _read_text(path, local.encoding, cfg.name)
    if local.format == "jsonl":
        return _json_lines(text, path, cfg.name)
    if local.format in ("csv", "tsv"):
        delimiter = "\t" if local.format == "tsv" else ","
        # the csv module splits records itself: a quoted field may hold line breaks. A field may be as
        # long as the file (training truncates at max_length): csv's own 128 KB limit is lifted
        csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
        rows, starts = [], [2]  # starts[i]: the line record i starts on
        try:
            for row in reader:
                rows.append(row)
                starts.append(reader.line_num + 1)
        except csv.Error as error:
            raise BenchError(f"task {cfg.name}: {path}:{starts[-1]} cannot be read as {local.format} "
                             f"({error}); fix that line") from None
        if rows and None in rows[-1].values() and any("\n" in (v or "") for v in rows[-1].values()):
            # a quote opened and never closed: its field ran to the end of the file, leaving the record short
            raise BenchError(f"task {cfg.name}: {path}:{starts[-2]} opens a quote that is never closed, so "
                             f"its field swallows the {reader.line_num - starts[-2] + 1} lines to the end of "
                             "the file: close the quote, or fix that line")
        return rows
    # DataFormat.regex, the one format left
    if not local.pattern:
        raise BenchError(f"task {cfg.name}: local.format is regex but local.pattern is not set")
    pattern = re.compile(local.pattern)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = pattern.match(line)
        if match is None:
            raise BenchError(f"task {cfg.name}: {path}:{number} does not match local.pattern")
        rows.append(match.groupdict())
    return rows


def _read_text(path: Path, encoding: str, task: str) -> str:
    """The file's text; UTF-8 with or without a byte-order mark (Excel writes one)."""
    data = path.read_bytes()
    try:
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    except LookupError:
        raise BenchError(f"task {task}: task.local.encoding={encoding} is not an encoding Python knows; "
                         "use utf-8, latin-1, cp1252, ...") from None
    try:
        return data.decode(codec)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise BenchError(f"task {task}: {path}:{line} is not {encoding} (byte {data[error.start]:#04x}); "
                         f"convert the file to {encoding}, or set task.local.encoding to its encoding "
                         "(latin-1, cp1252, ...)") from None


def _json_lines(text: str, path: Path, task: str) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BenchError(f"task {task}: {path}:{number} is not JSON ({error.msg} at column "
                             f"{error.colno}); fix that line: each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise BenchError(f"task {task}: {path}:{number} is a JSON {type(row).__name__}, not an object; "
                             "each line must be one JSON object with the task's columns")
        rows.append(row)
    return rows


def _read_hub(cfg: TaskConfig, split: str) -> list[dict]:
    import datasets

    hub = cfg.hub
    try:
        dataset = datasets.load_dataset(hub.path, hub.name, split=getattr(hub, f"{split}_split"))
    except (OSError, ValueError) as error:  # no network, no such dataset/config/split
        raise BenchError(
            f"task {cfg.name}: could not load {hub.path} from the Hub ({type(error).__name__}: "
            f"{first_line(error)}); "
            "set BENCH_DATA_DIR to use local release files"
        ) from None
    return hub_records(dataset, dict(hub.columns))


def hub_records(dataset, columns: dict[str, str]) -> list[dict]:
    """A Hub split as plain records: columns renamed, class ids turned into their names."""
    import datasets

    if columns:
        dataset = dataset.rename_columns(columns)
    class_labels = {
        name: feature
        for name, feature in dataset.features.items()
        if isinstance(feature, datasets.ClassLabel)
    }
    records = dataset.to_list()
    for record in records:
        for name, feature in class_labels.items():
            record[name] = feature.int2str(record[name]) if record[name] >= 0 else str(record[name])
    return records


# -- records to examples ---------------------------------------------------------------------------


def _to_example(cfg: TaskConfig, template, split: str, index: int, record: dict, origin: str) -> Example:
    where = f"task {cfg.name}, {split} record {index} of {origin}"
    if cfg.target_column not in record:
        raise BenchError(
            f"{where}: no column {cfg.target_column!r} (columns: {sorted(record)}); fix task.target_column"
        )
    try:
        text = template.render(**record)
    except jinja2.UndefinedError as error:
        raise BenchError(f"{where}: the prompt template uses a missing column ({error}); "
                         f"columns are {sorted(record)}") from None
    target, label = task_kind(cfg.kind).gold(record[cfg.target_column], cfg.labels, cfg.label_index, where)
    return Example(id=f"{split}-{index}", prompt=student_prompt(cfg, text), target=target, label=label,
                   record=record)

