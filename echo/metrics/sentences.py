"""Broken sentences: the marks of a draft whose words came out of order or went missing, which
neither the duplicate-word check nor the sections check sees ("The mediastinal contours. normal.",
"No pleural effusion or pneumothorax..", ": internal jugular central.").

A sentence is broken when it
- starts with a lowercase letter ("normal.", "contours are normal."), unless the sentence before it
  ends with an abbreviation ("vs.", "e.g.", "approx.", a single letter) or a number;
- is empty or starts with punctuation (". .", ": Pulmonary edema.", "- right"); a section that is a
  lone "-" is the mark of an empty section, which `echo.metrics.sections` counts, not a sentence;
- holds a doubled stop, a stop after a comma or a stop after a space ("enlarged..", "lobe,.", "lung .").

On the bundled data set's 382 validation reports (signed, synthetic) none is broken; of the drafts
of the same studies, the AR model's have 8 with a broken sentence, the multi-step teacher's 29, the
one-step student's 256 and the student decoded multi-step 101.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_HEADING = re.compile(r"\b(?:FINDINGS|IMPRESSION)\s*:", re.IGNORECASE)
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_LOWER_START = re.compile(r"[a-z]")
_BAD_START = re.compile(r"[.,;:!?\-]")
_BAD_STOP = re.compile(r"\.\.|\.\s+\.|,\s*\.|\s\.")
# Abbreviations after which a sentence may go on in lowercase (radiology's common ones).
_ABBREVIATIONS = frozenset({"vs", "e.g", "i.e", "approx", "cf", "etc", "no", "dr", "st", "fig", "ca", "resp"})
EMPTY_SECTION = "-"
_TRAILING_WORD = re.compile(r"([A-Za-z][A-Za-z.]*|\d+)\.$")


def broken_sentences(text: str) -> list[str]:
    """The broken sentences of a report, in order (the headings are not sentences)."""
    broken: list[str] = []
    for part in _HEADING.split(text):
        previous = ""
        for sentence in (s.strip() for s in _SPLIT.split(part)):
            if not sentence or sentence == EMPTY_SECTION:
                continue
            if (
                _BAD_START.match(sentence)
                or _BAD_STOP.search(sentence)
                or (_LOWER_START.match(sentence) and not _continues(previous))
            ):
                broken.append(sentence)
            previous = sentence
    return broken


def _continues(previous: str) -> bool:
    """The sentence before ends with an abbreviation or a number: what follows may be lowercase."""
    found = _TRAILING_WORD.search(previous)
    if found is None:
        return False
    word = found.group(1).lower().rstrip(".")
    return word.isdigit() or len(word) == 1 or word in _ABBREVIATIONS


@dataclass(frozen=True)
class BrokenSentences:
    reports_with_broken: float  # share of reports with at least one broken sentence
    broken: int  # broken sentences over all reports


def broken_sentence_figures(reports: Sequence[str]) -> BrokenSentences:
    counts = [len(broken_sentences(report)) for report in reports]
    share = sum(1 for count in counts if count) / len(counts) if counts else 0.0
    return BrokenSentences(share, sum(counts))
