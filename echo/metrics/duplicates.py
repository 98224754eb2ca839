"""Adjacent duplicated words ("the the", "nodule nodule"): the mark of a block whose positions
were predicted independently, invisible to the 4-gram repetition figure.

Words are compared case-insensitively within a sentence: a sentence end (". ", "? ", "; ", ": ", a
line break) separates them, so the signed reports' "The heart is normal. Normal mediastinal
contours." does not count, while a comma does not ("effusion, effusion" counts). A number keeps its
decimal point ("1.1 cm" is one word, not "1 1"). On the bundled data set's 4000 signed reports the
rate is 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"[.!?;:]+(?=\s|$)|\n")


def duplicate_words(text: str) -> list[str]:
    """Each word that repeats the word right before it in its sentence, in order ("the the the"
    gives two)."""
    duplicated: list[str] = []
    for sentence in _SENTENCE_END.split(text.lower()):
        found = _WORD.findall(sentence)
        duplicated += [word for previous, word in zip(found, found[1:], strict=False) if word == previous]
    return duplicated


def word_count(text: str) -> int:
    return len(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class DuplicateWords:
    rate: float  # duplicated words / all words, over the whole corpus
    reports_with_duplicates: float  # share of reports with at least one
    duplicates: int
    words: int


def adjacent_duplicates(reports: Sequence[str]) -> DuplicateWords:
    if not reports:
        return DuplicateWords(0.0, 0.0, 0, 0)
    counts = [len(duplicate_words(report)) for report in reports]
    words = sum(word_count(report) for report in reports)
    duplicates = sum(counts)
    return DuplicateWords(
        duplicates / words if words else 0.0,
        sum(count > 0 for count in counts) / len(reports),
        duplicates,
        words,
    )
