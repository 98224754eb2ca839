"""Repetition in generated reports: the failure one-step decoding shows when tokens of a block are
predicted independently ("no pleural effusion no pleural effusion").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from echo.metrics.text import ngram_counts, words


@dataclass(frozen=True)
class Repetition:
    repeated_ngram_share: float  # mean over reports of the share of n-grams that repeat an earlier one
    reports_with_repeats: float  # share of reports with some n-gram occurring `times` times or more


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """1 - distinct / total n-grams of one report; 0.0 when it has fewer than n words."""
    counts = ngram_counts(words(text), n)
    total = sum(counts.values())
    return 0.0 if total == 0 else 1.0 - len(counts) / total


def repetition(reports: Sequence[str], n: int = 4, times: int = 3) -> Repetition:
    if not reports:
        return Repetition(0.0, 0.0)
    shares = [repeated_ngram_share(r, n) for r in reports]
    repeating = sum(max(ngram_counts(words(r), n).values(), default=0) >= times for r in reports)
    return Repetition(sum(shares) / len(reports), repeating / len(reports))
