from decimal import Decimal

import pytest

from bench.errors import BenchError
from bench.task_kinds import KINDS, extract_label, extract_number

MATH, CLASSIFICATION = KINDS["math"], KINDS["classification"]


@pytest.mark.parametrize("text, number", [
    ("so 3 + 4 = 7\n#### 7", Decimal(7)),
    ("#### -12", Decimal(-12)),  # the sign is kept (LLM2LLM's code dropped it)
    ("#### 1,234,567", Decimal(1234567)),  # thousands separators
    ("#### $1,000.50", Decimal("1000.50")),
    ("#### 18.", Decimal(18)),
    ("#### 5 apples\nmore text", Decimal(5)),
    ("The answer is 42.", None),  # no '####': no answer
    ("#### apples", None),
    ("#### 3\n#### 4", Decimal(3)),  # the first marker counts
])
def test_extract_number(text, number):
    assert extract_number(text) == number


def test_numbers_compare_numerically():
    assert MATH.is_correct("#### 72.0", "72")
    assert MATH.is_correct("#### 1,000", "1000")
    assert not MATH.is_correct("#### 12", "-12")
    assert not MATH.is_correct("72", "72")


@pytest.mark.parametrize("generation, label", [
    (" HUM", "HUM"),
    ("HUM\nClass: LOC", "HUM"),  # extra text after the label
    (" HUM. because it asks who", "HUM"),
    (" positive", "positive"),
    ("positively", "positively"),  # not a label: a word that merely starts with one
    ("", ""),
])
def test_extract_label(generation, label):
    assert extract_label(generation, ["HUM", "LOC", "positive", "negative"]) == label


def test_longest_label_wins():
    assert extract_label("Search Creative", ["Search", "Search Creative"]) == "Search Creative"


def test_label_must_match_exactly():
    labels = ["DESC", "HUM"]
    assert CLASSIFICATION.is_correct(" DESC\n", "DESC", labels)
    assert not CLASSIFICATION.is_correct(" desc", "DESC", labels)  # case matters
    assert not CLASSIFICATION.is_correct(" HUMAN", "HUM", labels)
    assert CLASSIFICATION.prediction(" HUMAN", labels) == "HUMAN"
    assert MATH.prediction("#### -3", labels) == "-3"


def test_each_kind_reads_gold_targets_and_teacher_replies():
    assert MATH.gold("3 + 4 = 7\n#### 7", [], False, "here") == ("3 + 4 = 7\n#### 7", "7")
    with pytest.raises(BenchError, match="here: the solution has no '#### <number>' line"):
        MATH.gold("seven", [], False, "here")
    assert CLASSIFICATION.gold("1", ["a", "b"], True, "here") == ("b", "b")
    with pytest.raises(BenchError, match="label 'c' is not in task.labels"):
        CLASSIFICATION.gold("c", ["a", "b"], False, "here")
    assert MATH.read_reply({"answer": "so #### 1,200"}, []) == (
        {"answer": "so #### 1,200", "label": "1200"},
        None,
    )
    assert MATH.read_reply({"answer": "twelve"}, []) == (None, "no_final_number")
    assert CLASSIFICATION.read_reply({"label": "HUM."}, ["HUM"]) == ({"label": "HUM"}, None)
    assert CLASSIFICATION.read_reply({"label": "PERSON"}, ["HUM"]) == (None, "label_outside_set")
    assert MATH.target({"answer": "#### 3", "label": "3"}) == "#### 3"
    assert CLASSIFICATION.target({"answer": "x", "label": "HUM"}) == "HUM"
    assert MATH.stop == ("\n\n",) and CLASSIFICATION.stop == ("\n",)
