"""Task kinds: what differs between a math task (a worked solution ending '#### <number>') and a
classification task (a label from a fixed set). One class per kind owns all of it: how a gold target
is read from a record, where a student's generation stops, how an answer is extracted and scored (the
one scoring path of every split and caller: lm-eval's per-example metric, LLM2LLM's search for wrong
seed examples, the teacher probe), how a teacher's reply is validated and turned into a training
target, and how the simulated teacher makes a wrong answer. A new kind is one subclass here; the
`task.kind` options of the config are the subclasses' names."""

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

try:
    from bench.errors import BenchError
except ImportError:  # the copy beside a run's lm-eval task YAMLs (bench/evaluation.py) loads alone
    BenchError = ValueError

_LEADING_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)")


def extract_number(text: str) -> Decimal | None:
    """The number after the first '####', sign kept, ',' and '$' stripped; None if there is none."""
    _, marker, rest = text.partition("####")
    if not marker:
        return None
    match = _LEADING_NUMBER.match(rest.replace(",", "").replace("$", ""))
    return Decimal(match.group(1)) if match else None


def extract_label(text: str, labels: Sequence[str]) -> str:
    """The label the generation starts with (its first line; trailing text after the label is
    ignored, so 'HUM.' or 'HUM\\nClass: LOC' read as HUM); otherwise that first line itself."""
    line = text.strip().split("\n", 1)[0].strip()
    for label in sorted(labels, key=len, reverse=True):  # longest first: 'positive' before 'pos'
        if line == label or (line.startswith(label) and not line[len(label)].isalnum()):
            return label
    return line


class TaskKind(ABC):
    """One kind of task. Subclasses set `name` and `stop`, and implement the abstract methods."""

    name: ClassVar[str]
    stop: ClassVar[tuple[str, ...]]  # where a student's generation ends

    @abstractmethod
    def gold(self, raw: Any, labels: Sequence[str], label_index: bool, where: str) -> tuple[str, str]:
        """(target, label) of a record's target column; a BenchError naming `where` if it is invalid."""

    @abstractmethod
    def prediction(self, generation: str, labels: Sequence[str]) -> str | None:
        """What the student answered, comparable with a gold label; None when it gave no answer."""

    def is_correct(self, generation: str, gold: str, labels: Sequence[str] = ()) -> bool:
        return self.prediction(generation, labels) == gold

    @abstractmethod
    def is_answer(self, prediction: str | None, labels: Sequence[str]) -> bool:
        """Whether a prediction is an answer at all (a number; a label of the set), right or wrong: a
        student that never writes one scores 0 for its format, not its knowledge."""

    @abstractmethod
    def read_reply(self, fields: dict, labels: Sequence[str]) -> tuple[dict | None, str | None]:
        """A teacher reply's parsed fields, validated and with `label` set; or (None, why it is dropped)."""

    @abstractmethod
    def target(self, fields: dict) -> str:
        """The training target a validated reply gives: what the student must learn to write."""

    def cut_after_answer(self, fields: dict) -> dict:
        """A reply's fields with what follows the answer removed (strategy.keep_after_answer=false)."""
        return fields

    def prompt_fields(self, label: str) -> dict:
        """What a teacher prompt about an example of this label may ask for beyond the example itself."""
        return {}

    @abstractmethod
    def wrong_answer(
        self, target: str, label: str, labels: Sequence[str], rng: random.Random
    ) -> tuple[str, str]:
        """A plausible wrong (target, label), for the simulated teacher's error rate."""


class Math(TaskKind):
    name = "math"
    stop = ("\n\n",)  # solutions span lines

    def gold(self, raw, labels, label_index, where):
        target = str(raw).strip()
        number = extract_number(target)
        if number is None:
            raise BenchError(f"{where}: the solution has no '#### <number>' line; fix the data or task.kind")
        return target, str(number)

    def prediction(self, generation, labels=()):
        number = extract_number(generation)
        return None if number is None else str(number)

    def is_correct(self, generation, gold, labels=()):
        predicted = extract_number(generation)
        return predicted is not None and predicted == Decimal(gold)

    def is_answer(self, prediction, labels):
        return prediction is not None

    def cut_after_answer(self, fields):
        """Up to the end of the '#### <number>' line, as the LLM2LLM authors' GSM8K generate_data.py."""
        if "####" not in fields.get("answer", ""):
            return fields
        head, marker, rest = fields["answer"].partition("####")
        number_line = next((line for line in rest.splitlines() if line.strip()), "")
        return {**fields, "answer": f"{head}{marker}{number_line}".strip()}

    def read_reply(self, fields, labels):
        if "answer" not in fields:
            return fields, None
        number = extract_number(fields["answer"])
        if number is None:
            return None, "no_final_number"
        return {**fields, "label": str(number)}, None

    def target(self, fields):
        return fields["answer"]

    def wrong_answer(self, target, label, labels, rng):  # shift the final number
        head, _, number = target.rpartition("####")
        wrong = str(int(float(number.replace(",", "").strip() or 0)) + rng.randint(1, 9))
        return f"{head}#### {wrong}", wrong


class Classification(TaskKind):
    name = "classification"
    stop = ("\n",)  # a label ends at the line's end

    def gold(self, raw, labels, label_index, where):
        value = str(raw).strip()
        if label_index and value.isdigit() and int(value) < len(labels):
            value = labels[int(value)]
        if value not in labels:
            raise BenchError(f"{where}: label {value!r} is not in task.labels {list(labels)}; "
                             "add it to labels or fix the data")
        return value, value

    def prediction(self, generation, labels=()):
        return extract_label(generation, labels)

    def is_answer(self, prediction, labels):
        return prediction in labels

    def read_reply(self, fields, labels):
        if "label" not in fields:
            return fields, None
        label = extract_label(fields["label"], labels)
        if label not in labels:
            return None, "label_outside_set"
        return {**fields, "label": label}, None

    def target(self, fields):
        return fields["label"]

    def prompt_fields(self, label):
        return {"target_label": label}  # LLM2LLM asks for a new example of the same label

    def wrong_answer(self, target, label, labels, rng):
        other = rng.choice([x for x in labels if x != label] or [label])
        return other, other


KINDS: dict[str, TaskKind] = {kind.name: kind() for kind in TaskKind.__subclasses__()}


def task_kind(name: str) -> TaskKind:
    """The kind object of `task.kind` (validated against KINDS when the config is composed)."""
    return KINDS[name]


def process_results(doc: dict, results: list[str]) -> dict:
    """lm-eval's per-document metric. lm-eval loads it from a copy of this file written beside each task
    YAML (`!function synthbench_scoring.process_results`), so plain lm-eval scores a run's tasks exactly as
    the suite does, without importing it: this file imports only the standard library."""
    return {"acc": float(task_kind(doc["kind"]).is_correct(results[0], doc["label"], doc["labels"]))}
