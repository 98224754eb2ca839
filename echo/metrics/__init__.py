"""The yardstick: a rule-based finding labeler, positive-finding F1 and text-generation metrics.

Nothing here imports torch at import time; SemScore loads its model (and torch) when it is called.
"""

from echo.metrics.attributes import label_attributes
from echo.metrics.bleu import BleuScore, corpus_bleu
from echo.metrics.cider import cider_d
from echo.metrics.evaluate import evaluate
from echo.metrics.findings_f1 import (
    ClassScore,
    F1Result,
    f1_from_labels,
    positive_f1,
    positive_f1_from_labels,
)
from echo.metrics.labeler import label_report
from echo.metrics.repetition import Repetition, repeated_ngram_share, repetition
from echo.metrics.rouge import rouge_l, rouge_l_pair
from echo.metrics.semscore import load_minilm, semscore
from echo.metrics.speed import Speed, decoding_speed

__all__ = [
    "BleuScore",
    "ClassScore",
    "F1Result",
    "Repetition",
    "Speed",
    "cider_d",
    "corpus_bleu",
    "decoding_speed",
    "evaluate",
    "f1_from_labels",
    "label_attributes",
    "label_report",
    "load_minilm",
    "positive_f1",
    "positive_f1_from_labels",
    "repeated_ngram_share",
    "repetition",
    "rouge_l",
    "rouge_l_pair",
    "semscore",
]
