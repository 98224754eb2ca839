"""Which report an inference writes: reuse the study's report of this model version, or write the next
revision, superseding a draft read from a non-frontal view now that a frontal one is there (see
`node.store.redraft`); and whether a frontal arrived while a non-frontal one was being read."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from node.dicom.chest import facts_from_dataset
from node.dicom.ingest import frontal_chest_radiograph
from node.store.models import Instance, Report
from node.store.redraft import newest_report, read_from_non_frontal
from worker.views import ViewCandidate, ViewPick, pick_frontal


@dataclass(frozen=True)
class DraftPlan:
    """What inference does with the study's drafts: reuse one, or write the next revision."""

    reuse_id: int | None  # an existing report to reuse; None: write a new one
    revision: int  # the new report's revision (or the reused one's)
    supersedes_id: int | None  # the draft a new report corrects


def drafted_from_non_frontal(report: Report, candidates: list[ViewCandidate]) -> bool:
    """Was `report` read from an image that is not a frontal view? Asked of that image's header by the
    view ladder when it is still readable, else of the reason the report recorded when it was drafted."""
    for candidate in candidates:
        if candidate.instance_id == report.instance_id:
            return pick_frontal([candidate]).fallback
    return read_from_non_frontal(report.view_reason)


def plan_draft(
    session: Session, study_id: int, model_version_id: int, pick: ViewPick, candidates: list[ViewCandidate]
) -> DraftPlan:
    """Reuse the study's report of this model version, unless its newest draft was read from a non-frontal
    view and `pick` is a frontal one: then the next revision supersedes that draft."""
    current = newest_report(session, study_id)
    if current is not None and not pick.fallback and drafted_from_non_frontal(current, candidates):
        return DraftPlan(None, current.revision + 1, current.id)
    mine = session.scalars(
        select(Report)
        .where(Report.study_id == study_id, Report.model_version_id == model_version_id)
        .order_by(Report.revision.desc(), Report.id.desc())
        .limit(1)
    ).first()
    if mine is not None:
        return DraftPlan(mine.id, mine.revision, mine.supersedes_id)
    return DraftPlan(None, (current.revision + 1) if current is not None else 1, None)


def frontal_arrived(session: Session, study_id: int, read_ids: frozenset[int]) -> bool:
    """Whether an instance stored since inference listed the study's images is a frontal chest view
    (what would send a drafted study back, `node.dicom.ingest.frontal_chest_radiograph`)."""
    arrived = session.scalars(
        select(Instance.path).where(Instance.study_id == study_id, Instance.id.not_in(read_ids))
    )
    for path in arrived:
        try:
            header = dcmread(path, stop_before_pixels=True)
        except Exception:  # gone or unreadable: it cannot be read in place of this draft either
            continue
        if frontal_chest_radiograph(facts_from_dataset(header)):
            return True
    return False
