"""Word-level text similarity shared by the filters (near-duplicates, decontamination) and the
diversity scores: tokens, the longest common subsequence and ROUGE-L."""

import re


def words(text: str) -> list:
    return re.findall(r"\w+", text.lower())


def lcs_length(a: list, b: list) -> int:
    """Longest common subsequence of two token lists, bit-parallel (Allison-Dix): one pass over `a`
    with |b|-bit integers instead of an |a| x |b| table."""
    masks: dict = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def rouge_l(a: list, b: list) -> float:
    """ROUGE-L F1 of two token lists."""
    if not a or not b:
        return 0.0
    return 2 * lcs_length(a, b) / (len(a) + len(b))
