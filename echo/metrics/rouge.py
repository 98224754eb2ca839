"""ROUGE-L: the longest common subsequence of words, as an F-measure (Lin 2004).

F1 (beta = 1), as Google's rouge-score package reports it; the corpus score is the mean over pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

from echo.metrics.text import check_pairs, words


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_pair(prediction: str, reference: str) -> float:
    predicted, expected = words(prediction), words(reference)
    common = lcs_length(predicted, expected)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over prediction/reference pairs; 0.0 for an empty corpus."""
    check_pairs(predictions, references)
    if not predictions:
        return 0.0
    return sum(rouge_l_pair(p, r) for p, r in zip(predictions, references, strict=True)) / len(predictions)
