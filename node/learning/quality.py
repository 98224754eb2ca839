"""Draft quality per model version (and per ISO week): the scored drafts summed up.

What counts: each study once per model version, with its latest draft by that version scored
against the study's current signed report (a correction's score replaces the first one's; the
history stays in `draft_scores`). Figures, over those studies:

- positive-finding micro precision, recall and F1 of the drafts against the signed reports;
- false positives per normal study: positive findings the drafts name where the signed report names
  none, per such study (None where there is no normal study);
- the mean word edit distance (0: signed as drafted, 1: rewritten) and the share of studies whose
  impression the radiologist changed.

A draft belongs to the week it was written (ISO week of `reports.created_at`, UTC), and `since`
keeps the drafts written on or after it. The pure functions take `ScoreRow`s; `load_scores` and
`quality_report` are the database side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo.metrics.findings_f1 import score_counts
from node.store.models import DraftScore, ModelVersion, Report, SignedReport


class UnknownModel(ValueError):
    """--model names no model version."""


@dataclass(frozen=True)
class ModelRef:
    id: int
    name: str
    version: str


@dataclass(frozen=True)
class ScoreRow:
    """One stored score with what aggregation needs to know about its draft."""

    study_id: int
    report_id: int
    revision: int
    signed_report_id: int
    model: ModelRef
    drafted_at: datetime
    true_positives: int
    false_positives: int
    false_negatives: int
    signed_normal: bool
    edit_distance: float
    impression_changed: bool


@dataclass(frozen=True)
class QualityRow:
    model: ModelRef
    week: str | None  # "2026-W49"; None when not grouped by week
    studies: int
    f1: float
    precision: float
    recall: float
    normal_studies: int
    false_positives_per_normal: float | None
    mean_edit_distance: float
    impression_changed_share: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def current_scores(rows: Iterable[ScoreRow]) -> list[ScoreRow]:
    """One score per (study, model version): its latest draft's, against the newest signed report."""
    chosen: dict[tuple[int, int], ScoreRow] = {}
    for row in rows:
        key = (row.study_id, row.model.id)
        best = chosen.get(key)
        if best is None or _rank(row) > _rank(best):
            chosen[key] = row
    return sorted(chosen.values(), key=lambda row: (row.model.id, row.drafted_at, row.study_id))


def aggregate(rows: Iterable[ScoreRow], by_week: bool = False) -> list[QualityRow]:
    """The figures per model version (and week), ordered by model id then week."""
    groups: dict[tuple[int, str | None], list[ScoreRow]] = {}
    for row in current_scores(rows):
        groups.setdefault((row.model.id, iso_week(row.drafted_at) if by_week else None), []).append(row)
    return [_figures(group, week) for (_, week), group in sorted(groups.items(), key=lambda item: item[0])]


def matching_models(models: Sequence[ModelRef], spec: str) -> list[ModelRef]:
    """The versions `spec` names: an id, a name (all its versions), a version, or a version's start
    (at least 4 characters, as `echo-admin models` shows it shortened)."""
    spec = spec.strip()
    exact = [m for m in models if spec in (str(m.id), m.name, m.version)]
    if exact or len(spec) < 4:
        return exact
    return [m for m in models if m.version.startswith(spec)]


def load_scores(
    session: Session, since: datetime | None = None, model_ids: Sequence[int] | None = None
) -> list[ScoreRow]:
    """The stored scores against current signed reports, with their drafts' model and date."""
    query = (
        select(DraftScore, Report.study_id, Report.revision, Report.created_at, ModelVersion)
        .join(Report, Report.id == DraftScore.report_id)
        .join(SignedReport, SignedReport.id == DraftScore.signed_report_id)
        .join(ModelVersion, ModelVersion.id == DraftScore.model_version_id)
        .where(SignedReport.replaced_by_id.is_(None))
        .order_by(DraftScore.id)
    )
    if since is not None:
        query = query.where(Report.created_at >= since)
    if model_ids is not None:
        query = query.where(DraftScore.model_version_id.in_(model_ids))
    return [
        ScoreRow(
            study_id=study_id,
            report_id=score.report_id,
            revision=revision,
            signed_report_id=score.signed_report_id,
            model=ModelRef(model.id, model.name, model.version),
            drafted_at=drafted_at,
            true_positives=score.true_positives,
            false_positives=score.false_positives,
            false_negatives=score.false_negatives,
            signed_normal=score.signed_normal,
            edit_distance=score.edit_distance,
            impression_changed=score.impression_changed,
        )
        for score, study_id, revision, drafted_at, model in session.execute(query)
    ]


def quality_report(
    session: Session, model: str | None = None, since: datetime | None = None, by_week: bool = False
) -> list[QualityRow]:
    """`aggregate` over the database's scores; `UnknownModel` when `model` names no version."""
    model_ids: list[int] | None = None
    if model is not None:
        known = [ModelRef(m.id, m.name, m.version) for m in session.scalars(select(ModelVersion))]
        chosen = matching_models(known, model)
        if not chosen:
            raise UnknownModel(f"no model version is called {model!r} (see `echo-admin models`)")
        model_ids = [m.id for m in chosen]
    return aggregate(load_scores(session, since, model_ids), by_week)


def _rank(row: ScoreRow) -> tuple[int, int, int]:
    return (row.revision, row.report_id, row.signed_report_id)


def _figures(rows: Sequence[ScoreRow], week: str | None) -> QualityRow:
    tp = sum(row.true_positives for row in rows)
    fp = sum(row.false_positives for row in rows)
    fn = sum(row.false_negatives for row in rows)
    scored = score_counts(tp, fp, fn)
    normal = [row for row in rows if row.signed_normal]
    return QualityRow(
        model=rows[0].model,
        week=week,
        studies=len(rows),
        f1=scored.f1,
        precision=scored.precision,
        recall=scored.recall,
        normal_studies=len(normal),
        false_positives_per_normal=sum(row.false_positives for row in normal) / len(normal)
        if normal
        else None,
        mean_edit_distance=sum(row.edit_distance for row in rows) / len(rows),
        impression_changed_share=sum(row.impression_changed for row in rows) / len(rows),
    )
