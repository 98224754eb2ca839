"""Word tokens for the text-overlap metrics (ROUGE-L, BLEU, CIDEr-D, repetition).

Lower-cased runs of letters and digits, punctuation dropped: the same words the coco-caption
tokenizer keeps, so a full stop or a capital letter never counts as a match or a miss.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")

NGram = tuple[str, ...]


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngram_counts(tokens: Sequence[str], n: int) -> Counter[NGram]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    """Corpus metrics compare prediction i with reference i; unequal lengths are a caller's bug."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
