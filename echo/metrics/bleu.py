"""Corpus BLEU-4 (Papineni et al. 2002) with one reference per prediction.

Clipped n-gram counts are summed over the corpus before the precisions are taken, and the brevity
penalty compares the corpus's total lengths, as in the original definition. Smoothing: add-one on
the 2- to 4-gram precisions (Lin & Och 2004; NLTK's ``SmoothingFunction().method2``) so that a small
corpus with no matching 4-gram still scores above zero; the unigram precision is left alone, so a
corpus sharing no word with its references scores exactly 0 and an exact copy scores exactly 1.
Checked against NLTK's ``corpus_bleu(..., smoothing_function=method2)``: equal whenever every
prediction has at least 4 words (NLTK counts a shorter one as one n-gram in each denominator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from echo.metrics.text import check_pairs, ngram_counts, words


@dataclass(frozen=True)
class BleuScore:
    score: float
    precisions: tuple[float, ...]  # smoothed p_1 .. p_N
    brevity_penalty: float
    prediction_length: int
    reference_length: int


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], max_n: int = 4) -> BleuScore:
    check_pairs(predictions, references)
    matches = [0] * max_n
    totals = [0] * max_n
    prediction_length = reference_length = 0
    for prediction, reference in zip(predictions, references, strict=True):
        predicted, expected = words(prediction), words(reference)
        prediction_length += len(predicted)
        reference_length += len(expected)
        for n in range(1, max_n + 1):
            counts, reference_counts = ngram_counts(predicted, n), ngram_counts(expected, n)
            matches[n - 1] += sum(min(c, reference_counts[g]) for g, c in counts.items())
            totals[n - 1] += sum(counts.values())
    if prediction_length == 0 or matches[0] == 0:
        return BleuScore(0.0, tuple(0.0 for _ in range(max_n)), 0.0, prediction_length, reference_length)
    precisions = tuple(
        matches[0] / totals[0] if n == 0 else (matches[n] + 1) / (totals[n] + 1) for n in range(max_n)
    )
    if prediction_length >= reference_length:
        brevity_penalty = 1.0
    else:
        brevity_penalty = math.exp(1 - reference_length / prediction_length)
    score = brevity_penalty * math.exp(sum(math.log(p) for p in precisions) / max_n)
    return BleuScore(score, precisions, brevity_penalty, prediction_length, reference_length)
