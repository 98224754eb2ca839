"""Which checkpoint is "best": lowest validation loss, or highest findings F1 on validation studies.

A stage's loss and a report's clinical content part ways: AR validation loss rises while its
findings F1 keeps rising (the model memorises phrasings), and a DCD student's lower KL did not
bring findings back. `--select-by f1` decodes the validation studies the way the checkpoint will
be served (AR greedy, the teacher's multistep, the student's one step per block) and keeps the
checkpoint whose reports name the studies' findings best: positive-finding micro F1 against the
manifest labels (or, for rows without labels, what the labeler reads in the reference report), the
number `benchmarks/quality.py` reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from echo.errors import UserError
from echo.metrics.findings_f1 import f1_from_labels
from echo.metrics.labeler import label_report
from echo.training.checkpoint import GenerationSpec
from echo.training.examples import ExampleSet

SELECT_BY = ("loss", "f1")


def check_select_by(value: str) -> str:
    if value not in SELECT_BY:
        raise UserError(f"--select-by must be one of {', '.join(SELECT_BY)}, not {value!r}")
    return value


def findings_f1_scorer(
    model, tokenizer, spec: GenerationSpec, examples: ExampleSet, batch_size: int = 16
) -> Callable[[], float]:
    """A zero-argument scorer: decode `examples` with `model` as `spec` serves it, return micro F1."""
    from echo.training.predict import DecodeOptions, predict_rows

    if not len(examples):
        raise UserError("--select-by f1 needs validation studies: the validation split is empty")
    references = [
        labels or label_report(report)
        for labels, report in zip(examples.labels, examples.reports, strict=True)
    ]
    options = DecodeOptions(
        decode=spec.decode, threshold=spec.threshold_for(spec.decode), max_new_tokens=spec.max_new_tokens
    )

    def score() -> float:
        was_training = model.training
        rows = list(predict_rows(model, tokenizer, spec.prompt, examples, options, batch_size))
        model.train(was_training)
        by_id = {row["id"]: row["report"] for row in rows}
        predicted = [label_report(by_id[i]) for i in examples.ids]
        return f1_from_labels(predicted, references).micro

    return score


def selection_score(
    model, tokenizer, spec: GenerationSpec, val, loop, batch_size: int
) -> Callable[[], float] | None:
    """The Trainer's checkpoint score for `loop.select_by` (None: the lowest validation loss wins).

    `val` is the validation Batcher, `loop` the stage's LoopConfig.
    """
    if loop.select_by != "f1":
        return None
    return findings_f1_scorer(model, tokenizer, spec, val.examples, batch_size)


def best_score_entry(state, loop) -> dict[str, Any]:
    """What metrics.json records about the selection: the criterion and, for f1, the best score."""
    return {
        "select_by": loop.select_by,
        **({"best_val_f1": state.best_score} if loop.select_by == "f1" else {}),
    }
