"""How a student's generation is scored: the one scoring path for every split and caller
(lm-eval's per-example metric, LLM2LLM's search for wrong seed examples, the tests)."""

import re
from collections.abc import Sequence
from decimal import Decimal

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


def is_correct(kind: str, generation: str, gold: str, labels: Sequence[str] = ()) -> bool:
    if kind == "math":
        predicted = extract_number(generation)
        return predicted is not None and predicted == Decimal(gold)
    return extract_label(generation, labels) == gold


def prediction(kind: str, generation: str, labels: Sequence[str] = ()) -> str | None:
    """What the student answered, as recorded in predictions.jsonl."""
    if kind == "math":
        number = extract_number(generation)
        return None if number is None else str(number)
    return extract_label(generation, labels)
