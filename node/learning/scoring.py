"""Drafts scored against the reports the radiologists signed: the production measure of the model.

Every current signed report (not replaced by a correction) that is matched to a study is compared
with the study's latest draft (the highest `reports.revision`), once per (draft, signed report)
pair: a `DraftScore` row holds

- per-finding agreement: the rule-based labeler (`echo.metrics.labeler`) on both texts, and the
  positive-finding true / false positives and false negatives counted the way positive-finding F1
  counts them (`echo.metrics.findings_f1.positive_counts`): uncertain and negative are not positive;
- `signed_normal`: the signed report names no positive finding (a draft's positives there are the
  false positives per normal study);
- `edit_distance`: the words the radiologist changed, as the Levenshtein distance between the
  draft's and the signed report's words (findings then impression; lower-cased, punctuation
  dropped) over the longer of the two: 0.0 signed as drafted, 1.0 nothing kept;
- `impression_changed`: the impression's words differ.

A correction is a new current signed row, so it gets its own score; a study drafted again gets its
new draft scored against the current signed report. Older scores stay as history. Scoring is
idempotent, and safe from several processes at once: the pair is unique in the table, and the loser
of a race finds the winner's row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from echo.findings import FINDINGS, Label
from echo.metrics.findings_f1 import positive_counts
from echo.metrics.labeler import label_report
from echo.metrics.text import words
from echo.report import format_report
from node.learning.signed import match_pending
from node.store.models import DraftScore, Report, SignedReport, utcnow

log = logging.getLogger(__name__)

BATCH = 200  # pairs scored per transaction


@dataclass(frozen=True)
class Figures:
    """What a draft and its signed report are compared on (a `DraftScore` row without its ids)."""

    true_positives: int
    false_positives: int
    false_negatives: int
    signed_normal: bool
    edit_distance: float
    impression_changed: bool
    draft_labels: dict[str, str]
    signed_labels: dict[str, str]


def compare(
    draft_findings: str, draft_impression: str, signed_findings: str, signed_impression: str
) -> Figures:
    """The figures of a draft against the signed report of its study."""
    draft_labels = label_report(format_report(draft_findings, draft_impression))
    signed_labels = label_report(format_report(signed_findings, signed_impression))
    counts = positive_counts(draft_labels, signed_labels)
    return Figures(
        true_positives=counts.true_positives,
        false_positives=counts.false_positives,
        false_negatives=counts.false_negatives,
        signed_normal=not any(signed_labels.get(finding) == Label.POSITIVE for finding in FINDINGS),
        edit_distance=word_edit_distance(
            words(draft_findings) + words(draft_impression), words(signed_findings) + words(signed_impression)
        ),
        impression_changed=words(draft_impression) != words(signed_impression),
        draft_labels={finding: str(label) for finding, label in draft_labels.items()},
        signed_labels={finding: str(label) for finding, label in signed_labels.items()},
    )


def word_edit_distance(draft: Sequence[str], signed: Sequence[str]) -> float:
    """Levenshtein distance between two word sequences over the longer one's length (0.0 if both empty)."""
    longest = max(len(draft), len(signed))
    if longest == 0:
        return 0.0
    previous = list(range(len(signed) + 1))
    for i, word in enumerate(draft, start=1):
        current = [i]
        for j, other in enumerate(signed, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1] / longest


def pending_query() -> Select[tuple[SignedReport, Report]]:
    """(signed report, draft) pairs to score: current and matched signed reports, each with its
    study's latest draft, that have no score yet; oldest signed report first."""
    later = aliased(Report)
    newer_draft = exists().where(
        later.study_id == Report.study_id,
        or_(later.revision > Report.revision, and_(later.revision == Report.revision, later.id > Report.id)),
    )
    scored = exists().where(DraftScore.report_id == Report.id, DraftScore.signed_report_id == SignedReport.id)
    return (
        select(SignedReport, Report)
        .join(Report, Report.study_id == SignedReport.study_id)
        .where(
            SignedReport.replaced_by_id.is_(None), SignedReport.study_id.is_not(None), ~newer_draft, ~scored
        )
        .order_by(SignedReport.id, Report.id)
    )


def count_pending(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(pending_query().subquery())) or 0


def score_pending(session: Session, limit: int = BATCH, now: datetime | None = None) -> int:
    """Score up to `limit` waiting pairs; returns how many this call stored. Flushes, no commit."""
    return _score_batch(session, limit, now or utcnow())[1]


def store_score(
    session: Session, report: Report, signed: SignedReport, now: datetime | None = None
) -> DraftScore | None:
    """Compare and store one pair; None when another process stored it first (nothing changes)."""
    figures = compare(report.findings, report.impression, signed.findings, signed.impression)
    row = DraftScore(
        report_id=report.id,
        signed_report_id=signed.id,
        model_version_id=report.model_version_id,
        true_positives=figures.true_positives,
        false_positives=figures.false_positives,
        false_negatives=figures.false_negatives,
        signed_normal=figures.signed_normal,
        edit_distance=figures.edit_distance,
        impression_changed=figures.impression_changed,
        draft_labels=figures.draft_labels,
        signed_labels=figures.signed_labels,
        scored_at=now or utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the pair is unique: someone else scored it
        if _score_of(session, report.id, signed.id) is None:
            raise  # not a race: a real integrity problem
        return None
    return row


@dataclass(frozen=True)
class Tick:
    matched: int  # signed reports matched to their study now
    scored: int  # drafts scored now


def learning_tick(
    session_factory: sessionmaker[Session],
    batch: int = BATCH,
    max_batches: int | None = None,
    on_batch: Callable[[Tick], None] | None = None,
) -> Tick:
    """Match waiting signed reports to their studies and score the drafts waiting for a score, one
    transaction per batch, until nothing waits (or `max_batches`); `on_batch` hears each batch."""
    matched = scored = batches = 0
    while max_batches is None or batches < max_batches:
        with session_factory.begin() as session:
            now = utcnow()
            matched_now = len(match_pending(session, limit=batch, now=now))
            found, scored_now = _score_batch(session, batch, now)
        matched, scored, batches = matched + matched_now, scored + scored_now, batches + 1
        if on_batch is not None:
            on_batch(Tick(matched_now, scored_now))
        if found < batch and matched_now < batch:
            break
    if matched or scored:
        log.info("learning tick: %d signed reports matched, %d drafts scored", matched, scored)
    return Tick(matched, scored)


def _score_batch(session: Session, limit: int, now: datetime) -> tuple[int, int]:
    """(pairs found waiting, pairs this session stored)."""
    pairs = session.execute(pending_query().limit(limit)).all()
    stored = sum(store_score(session, report, signed, now) is not None for signed, report in pairs)
    session.flush()
    return len(pairs), stored


def _score_of(session: Session, report_id: int, signed_id: int) -> DraftScore | None:
    query = select(DraftScore).where(
        DraftScore.report_id == report_id, DraftScore.signed_report_id == signed_id
    )
    return session.scalars(query).first()
