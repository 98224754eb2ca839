"""CIDEr-D (Vedantam et al. 2015) exactly as coco-caption's ``pycocoevalcap/cider`` computes it.

For n = 1..4: n-gram term counts weighted by idf = log(#references) - log(max(1, document
frequency)), the document frequencies taken over the reference corpus; the hypothesis weights are
clipped to the reference's; cosine similarity per n; a Gaussian length penalty exp(-d^2 / 2 sigma^2)
with sigma = 6, the length difference d counted, like coco-caption, in bigrams; the mean over n,
times 10. One reference per prediction. A corpus of one pair scores 0 (every idf is log 1 = 0).
Checked against pycocoevalcap 1.2's ``Cider().compute_score`` on a random corpus: equal to 1e-15.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from echo.metrics.text import NGram, check_pairs, ngram_counts, words


@dataclass(frozen=True)
class _Vector:
    weights: list[dict[NGram, float]]  # per n-gram order
    norms: list[float]
    length: int  # bigram count, as coco-caption measures length


def _counts(text: str, max_n: int) -> Counter[NGram]:
    tokens = words(text)
    counts: Counter[NGram] = Counter()
    for n in range(1, max_n + 1):
        counts.update(ngram_counts(tokens, n))
    return counts


def _vector(counts: Counter[NGram], frequency: Counter[NGram], log_corpus: float, max_n: int) -> _Vector:
    weights: list[dict[NGram, float]] = [{} for _ in range(max_n)]
    norms = [0.0] * max_n
    length = 0
    for gram, count in counts.items():
        n = len(gram) - 1
        weight = count * (log_corpus - math.log(max(1.0, frequency[gram])))
        weights[n][gram] = weight
        norms[n] += weight * weight
        if n == 1:
            length += count
    return _Vector(weights, [math.sqrt(x) for x in norms], length)


def _similarity(hypothesis: _Vector, reference: _Vector, max_n: int, sigma: float) -> float:
    delta = hypothesis.length - reference.length
    penalty = math.exp(-(delta**2) / (2 * sigma**2))
    total = 0.0
    for n in range(max_n):
        value = 0.0
        for gram, weight in hypothesis.weights[n].items():
            reference_weight = reference.weights[n].get(gram, 0.0)
            value += min(weight, reference_weight) * reference_weight
        if hypothesis.norms[n] != 0 and reference.norms[n] != 0:
            value /= hypothesis.norms[n] * reference.norms[n]
        total += value * penalty
    return total / max_n


def cider_d(
    predictions: Sequence[str], references: Sequence[str], max_n: int = 4, sigma: float = 6.0
) -> float:
    """Corpus CIDEr-D (mean over pairs, x10); 0.0 for an empty corpus."""
    check_pairs(predictions, references)
    if not predictions:
        return 0.0
    reference_counts = [_counts(r, max_n) for r in references]
    frequency: Counter[NGram] = Counter()
    for counts in reference_counts:
        frequency.update(counts.keys())
    log_corpus = math.log(float(len(references)))
    total = 0.0
    for prediction, counts in zip(predictions, reference_counts, strict=True):
        hypothesis = _vector(_counts(prediction, max_n), frequency, log_corpus, max_n)
        reference = _vector(counts, frequency, log_corpus, max_n)
        total += _similarity(hypothesis, reference, max_n, sigma)
    return 10.0 * total / len(predictions)
