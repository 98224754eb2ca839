"""`evaluate`: every metric of a predictions file against a manifest, as one JSON-able dict.

Predictions are matched to manifest rows by id. A manifest study without a prediction is counted
and listed (a partial run is still worth scoring, but the reader must see it); a prediction whose id
is not in the manifest is an error, since it means the two files do not belong together.

Predictions written through the draft gate: a held draft was never sent, so every quality metric
is over the drafts the gate sent; the speed counts every forward spent, the held drafts' and the
re-decodes' included (what serving them cost).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from echo.errors import UserError
from echo.findings import Label
from echo.metrics.bleu import corpus_bleu
from echo.metrics.cider import cider_d
from echo.metrics.duplicates import adjacent_duplicates
from echo.metrics.findings_f1 import f1_from_labels, normal_studies
from echo.metrics.labeler import label_report
from echo.metrics.records import (
    GATE_OUTCOMES,
    Prediction,
    Reference,
    parse_predictions,
    parse_references,
)
from echo.metrics.repetition import repetition
from echo.metrics.rouge import rouge_l_pair
from echo.metrics.sections import complete_share
from echo.metrics.sentences import broken_sentence_figures
from echo.metrics.speed import decoding_speed

MISSING_IDS_SHOWN = 10

# (description, total) -> advance(n); the CLI passes one backed by a rich progress bar
ProgressFactory = Callable[[str, int], Callable[[int], None]]
# (study ids, drafts, advance) -> echo.training.fluency.Fluency; see echo.training.fluency.ArFluency
FluencyScorer = Callable[[list[str], list[str], Callable[[int], None]], Any]


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


def evaluate(
    pred_rows: Sequence[Mapping[str, Any]],
    ref_rows: Sequence[Mapping[str, Any]],
    *,
    with_semscore: bool = True,
    semscore_model: Any | None = None,
    fluency: FluencyScorer | None = None,
    progress: ProgressFactory = _no_progress,
) -> dict[str, Any]:
    """Every metric as a JSON-able dict; `fluency` (an AR model's scorer, needs torch) adds the
    drafts' per-token negative log-likelihood under it, None leaves it out."""
    predictions = parse_predictions(pred_rows)
    references = parse_references(ref_rows)
    by_id = {p.id: p for p in predictions}
    known = {r.id for r in references}
    strangers = [p.id for p in predictions if p.id not in known]
    if strangers:
        raise UserError(
            f"{len(strangers)} prediction id(s) are not in the manifest, e.g. {strangers[0]!r}: "
            "are the predictions for this manifest?"
        )
    matched = [(by_id[r.id], r) for r in references if r.id in by_id]
    pairs = [(p, r) for p, r in matched if not p.held]
    if not pairs:
        raise UserError("no prediction to score: every matched draft was held by the draft gate")
    missing = [r.id for r in references if r.id not in by_id]
    preds = [p.report for p, _ in pairs]
    refs = [r.report for _, r in pairs]

    predicted_labels, reference_labels = _labels(pairs, progress)
    f1 = f1_from_labels(predicted_labels, reference_labels)
    normals = normal_studies(predicted_labels, reference_labels)
    said = {
        name: sum(labels.get(name) == Label.POSITIVE for labels in predicted_labels) for name in f1.per_class
    }
    advance = progress("ROUGE-L", len(pairs))
    rouge_total = 0.0
    for prediction, reference in zip(preds, refs, strict=True):
        rouge_total += rouge_l_pair(prediction, reference)
        advance(1)
    advance = progress("BLEU-4, CIDEr-D, repetition", 1)
    bleu = corpus_bleu(preds, refs)
    cider = cider_d(preds, refs)
    repeats = repetition(preds)
    duplicates = adjacent_duplicates(preds)
    broken = broken_sentence_figures(preds)
    advance(1)
    fluent = None
    if fluency is not None:
        scored = fluency([p.id for p, _ in pairs], preds, progress("fluency (AR NLL)", len(pairs)))
        fluent = {"ar_nll_per_token": scored.nll_per_token, "tokens": scored.tokens, "model": scored.model}
    semantic = None
    if with_semscore:
        from echo.metrics.semscore import semscore

        semantic = semscore(
            preds, refs, model=semscore_model, on_batch=progress("SemScore-MiniLM", len(pairs))
        )
    timings = [t for p, _ in matched if (t := p.timing()) is not None]
    speed = decoding_speed([t[0] for t in timings], [t[1] for t in timings], [t[2] for t in timings])
    return {
        "studies": len(references),
        "predictions": len(predictions),
        "evaluated": len(pairs),
        "gate": _gate_counts([p for p, _ in matched]),
        "missing_predictions": len(missing),
        "missing_ids": missing[:MISSING_IDS_SHOWN],
        "reference_labels": _label_source(pairs),
        "positive_f1": {
            "micro": f1.micro,
            "micro_precision": f1.micro_precision,
            "micro_recall": f1.micro_recall,
            "macro": f1.macro,
            "per_class": {
                name: {**score._asdict(), "predicted": said[name]} for name, score in f1.per_class.items()
            },
        },
        "rouge_l": rouge_total / len(pairs),
        "bleu_4": bleu.score,
        "cider_d": cider,
        "semscore_minilm": semantic,
        "normal_studies": {
            "studies": normals.studies,
            "false_positives_per_study": normals.false_positives_per_study,
            "called_normal": normals.called_normal,
        },
        "repetition": {
            "repeated_4gram_share": repeats.repeated_ngram_share,
            "reports_with_4gram_3x": repeats.reports_with_repeats,
        },
        "duplicate_words": {
            "rate": duplicates.rate,
            "reports_with_duplicates": duplicates.reports_with_duplicates,
            "duplicates": duplicates.duplicates,
            "words": duplicates.words,
        },
        "broken_sentences": {"reports_with_broken": broken.reports_with_broken, "broken": broken.broken},
        "both_sections": complete_share(preds),
        "fluency": fluent,
        "tokens_per_forward": speed.tokens_per_forward,
        "tokens_per_second": speed.tokens_per_second,
        "timed_reports": speed.timed_reports,
    }


def _gate_counts(predictions: list[Prediction]) -> dict[str, int] | None:
    """How many drafts the gate passed, fixed by a re-decode and held; None when no row says."""
    if all(p.gate is None for p in predictions):
        return None
    return {outcome: sum(p.gate == outcome for p in predictions) for outcome in GATE_OUTCOMES}


def _labels(
    pairs: list[tuple[Prediction, Reference]], progress: ProgressFactory
) -> tuple[list[dict[str, Label]], list[dict[str, Label]]]:
    """Labeler output for each prediction; the manifest's labels (or the labeler's) for each reference."""
    unlabelled = sum(r.labels is None for _, r in pairs)
    advance = progress("labelling findings", len(pairs) + unlabelled)
    predicted, expected = [], []
    for prediction, reference in pairs:
        predicted.append(label_report(prediction.report))
        if reference.labels is None:
            expected.append(label_report(reference.report))
            advance(2)
        else:
            expected.append(reference.labels)
            advance(1)
    return predicted, expected


def _label_source(pairs: list[tuple[Prediction, Reference]]) -> str:
    given = {r.labels is not None for _, r in pairs}
    return "mixed" if len(given) == 2 else "manifest" if given == {True} else "labeler"
