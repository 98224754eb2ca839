"""The rows `evaluate` reads: predictions (``echo-train predict`` output) and manifest references.

A predictions row is ``{"id", "report", "tokens", "forwards", "seconds"}``; the three counters are
optional (reports written by another system have none) but, when present, must be non-negative
numbers. A row written through the draft gate (``echo-train predict --gate``) also says what the
gate did: ``"gate"`` is "passed", "redecoded" or "held" (a held draft is never sent). A manifest row needs ``id`` and ``report``; its ``labels`` ({finding: "positive" |
"negative" | "uncertain"}) are the ground truth when present. Every defect is one UserError line
naming the row, because a metric silently computed over a malformed file is worse than none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from echo.errors import UserError
from echo.findings import FINDINGS, Label

GATE_OUTCOMES = ("passed", "redecoded", "held")


@dataclass(frozen=True)
class Prediction:
    id: str
    report: str
    tokens: int | None = None
    forwards: int | None = None
    seconds: float | None = None
    gate: str | None = None  # the draft gate's outcome (GATE_OUTCOMES); None: no gate

    @property
    def held(self) -> bool:
        return self.gate == "held"

    def timing(self) -> tuple[int, int, float] | None:
        """(tokens, forwards, seconds) when the row has all three."""
        if self.tokens is None or self.forwards is None or self.seconds is None:
            return None
        return self.tokens, self.forwards, self.seconds


@dataclass(frozen=True)
class Reference:
    id: str
    report: str
    labels: dict[str, Label] | None  # None: the manifest gives none, the labeler reads the report


def parse_predictions(rows: Sequence[Mapping[str, Any]]) -> list[Prediction]:
    if not rows:
        raise UserError("the predictions file has no rows")
    predictions = [_prediction(row, f"predictions row {n}") for n, row in enumerate(rows, start=1)]
    _check_unique([p.id for p in predictions], "predictions")
    return predictions


def parse_references(rows: Sequence[Mapping[str, Any]]) -> list[Reference]:
    if not rows:
        raise UserError("the manifest has no rows")
    references = [_reference(row, f"manifest row {n}") for n, row in enumerate(rows, start=1)]
    _check_unique([r.id for r in references], "manifest")
    return references


def _prediction(row: Mapping[str, Any], where: str) -> Prediction:
    return Prediction(
        id=_id(row, where),
        report=_report(row, where),
        tokens=_count(row, "tokens", where),
        forwards=_count(row, "forwards", where),
        seconds=_seconds(row, where),
        gate=_gate(row, where),
    )


def _reference(row: Mapping[str, Any], where: str) -> Reference:
    labels = row.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise UserError(f'{where}: "labels" must be an object of finding: label')
    return Reference(_id(row, where), _report(row, where), None if labels is None else _labels(labels, where))


def _id(row: Mapping[str, Any], where: str) -> str:
    value = row.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise UserError(f'{where}: "id" must be a non-empty string')
    return value


def _report(row: Mapping[str, Any], where: str) -> str:
    value = row.get("report")
    if not isinstance(value, str):
        raise UserError(f'{where}: "report" must be a string')
    return value


def _count(row: Mapping[str, Any], key: str, where: str) -> int | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f'{where}: "{key}" must be a non-negative integer, got {value!r}')
    return value


def _seconds(row: Mapping[str, Any], where: str) -> float | None:
    value = row.get("seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise UserError(f'{where}: "seconds" must be a non-negative number, got {value!r}')
    return float(value)


def _gate(row: Mapping[str, Any], where: str) -> str | None:
    value = row.get("gate")
    if value is not None and value not in GATE_OUTCOMES:
        raise UserError(f'{where}: "gate" must be one of {", ".join(GATE_OUTCOMES)}, got {value!r}')
    return value


def _labels(labels: Mapping[str, Any], where: str) -> dict[str, Label]:
    parsed: dict[str, Label] = {}
    for finding, value in labels.items():
        if finding not in FINDINGS:
            raise UserError(f"{where}: unknown finding {finding!r} in labels (known: {', '.join(FINDINGS)})")
        try:
            parsed[finding] = Label(value)
        except (ValueError, TypeError):
            raise UserError(
                f"{where}: label {value!r} of {finding} is not positive, negative or uncertain"
            ) from None
    return parsed


def _check_unique(ids: list[str], what: str) -> None:
    seen: dict[str, int] = {}
    for number, identifier in enumerate(ids, start=1):
        if identifier in seen:
            raise UserError(f"{what}: id {identifier!r} appears twice (rows {seen[identifier]} and {number})")
        seen[identifier] = number
