from decimal import Decimal

import pytest

from bench.scoring import extract_label, extract_number, is_correct, prediction


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
    assert is_correct("math", "#### 72.0", "72")
    assert is_correct("math", "#### 1,000", "1000")
    assert not is_correct("math", "#### 12", "-12")
    assert not is_correct("math", "72", "72")


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
    assert is_correct("classification", " DESC\n", "DESC", labels)
    assert not is_correct("classification", " desc", "DESC", labels)  # case matters
    assert not is_correct("classification", " HUMAN", "HUM", labels)
    assert prediction("classification", " HUMAN", labels) == "HUMAN"
    assert prediction("math", "#### -3", labels) == "-3"
