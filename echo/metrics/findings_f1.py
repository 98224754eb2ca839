"""Positive-finding F1: did the report name the findings the study has?

Our analogue of the paper's positive-findings RaTEScore: each report is labelled with the rule-based
labeler, a class counts as predicted when its label is POSITIVE (uncertain and negative do not), and
precision / recall / F1 are taken per class, micro-averaged over all classes and macro-averaged over
the classes that have at least one positive reference (F1 of a class nobody has is undefined).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from echo.findings import FINDINGS, Label
from echo.metrics.labeler import label_report


class ClassScore(NamedTuple):
    precision: float
    recall: float
    f1: float
    support: int  # positive references


class Counts(NamedTuple):
    """Positive-finding counts: classes both call positive, only the prediction, only the reference."""

    true_positives: int
    false_positives: int
    false_negatives: int


@dataclass(frozen=True)
class F1Result:
    micro: float
    macro: float
    per_class: dict[str, ClassScore]
    micro_precision: float = 0.0  # over all classes: predicted positives that are true
    micro_recall: float = 0.0  # over all classes: true positives that were predicted


@dataclass(frozen=True)
class NormalStudies:
    """What drafts say about studies with no positive finding (the "no finding" studies)."""

    studies: int  # normal studies among the references
    false_positives_per_study: float  # positive findings the drafts name there, per study (0.0 if none)
    called_normal: float  # share of them whose draft names no positive finding (0.0 if none)


def positive_f1(pred_reports: Sequence[str], ref_reports: Sequence[str]) -> F1Result:
    """F1 of the positives the labeler reads in predictions against those it reads in references."""
    return positive_f1_from_labels(pred_reports, [label_report(r) for r in ref_reports])


def positive_f1_from_labels(
    pred_reports: Sequence[str], ref_labels: Sequence[Mapping[str, Label | str]]
) -> F1Result:
    """F1 of the labeler's positives in predictions against known reference labels (a manifest's)."""
    return f1_from_labels([label_report(r) for r in pred_reports], ref_labels)


def f1_from_labels(
    pred_labels: Sequence[Mapping[str, Label | str]], ref_labels: Sequence[Mapping[str, Label | str]]
) -> F1Result:
    if len(pred_labels) != len(ref_labels):
        raise ValueError(f"{len(pred_labels)} predictions but {len(ref_labels)} references")
    _check_classes((*pred_labels, *ref_labels))
    per_class: dict[str, ClassScore] = {}
    class_counts: list[Counts] = []
    for finding in FINDINGS:
        pairs = zip(pred_labels, ref_labels, strict=True)
        counts = _summed(_class_counts(predicted, expected, finding) for predicted, expected in pairs)
        per_class[finding] = score_counts(*counts)
        class_counts.append(counts)
    present = [s.f1 for s in per_class.values() if s.support > 0]
    macro = sum(present) / len(present) if present else 0.0
    micro = score_counts(*_summed(class_counts))
    return F1Result(micro.f1, macro, per_class, micro.precision, micro.recall)


def positive_counts(predicted: Mapping[str, Label | str], expected: Mapping[str, Label | str]) -> Counts:
    """One report against its reference, over all classes: the counts `f1_from_labels` sums."""
    _check_classes((predicted, expected))
    return _summed(_class_counts(predicted, expected, finding) for finding in FINDINGS)


def normal_studies(
    pred_labels: Sequence[Mapping[str, Label | str]], ref_labels: Sequence[Mapping[str, Label | str]]
) -> NormalStudies:
    """False-positive findings per normal study: a reference with no POSITIVE class is normal,
    and every class its draft calls POSITIVE is a false positive."""
    if len(pred_labels) != len(ref_labels):
        raise ValueError(f"{len(pred_labels)} predictions but {len(ref_labels)} references")
    said = [
        sum(predicted.get(finding) == Label.POSITIVE for finding in FINDINGS)
        for predicted, expected in zip(pred_labels, ref_labels, strict=True)
        if not any(expected.get(finding) == Label.POSITIVE for finding in FINDINGS)
    ]
    if not said:
        return NormalStudies(0, 0.0, 0.0)
    return NormalStudies(len(said), sum(said) / len(said), sum(n == 0 for n in said) / len(said))


def _check_classes(label_sets: Sequence[Mapping[str, Label | str]]) -> None:
    for labels in label_sets:
        unknown = set(labels) - set(FINDINGS)
        if unknown:
            raise ValueError(f"unknown finding class {sorted(unknown)[0]!r}")


def _class_counts(
    predicted: Mapping[str, Label | str], expected: Mapping[str, Label | str], finding: str
) -> Counts:
    said = predicted.get(finding) == Label.POSITIVE
    true = expected.get(finding) == Label.POSITIVE
    return Counts(int(said and true), int(said and not true), int(true and not said))


def _summed(counts: Iterable[Counts]) -> Counts:
    tp = fp = fn = 0
    for one in counts:
        tp, fp, fn = tp + one.true_positives, fp + one.false_positives, fn + one.false_negatives
    return Counts(tp, fp, fn)


def score_counts(tp: int, fp: int, fn: int) -> ClassScore:
    """Precision, recall and F1 of summed counts (0.0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassScore(precision, recall, f1, tp + fn)
