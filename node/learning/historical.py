"""Imported studies are historical: stored as a PACS would store them, never drafted.

`echo-admin import` sends an archive's files through the node's own ingest as one association of
its own (calling AE `IMPORT_AE`, in the associations table like any other). While it is open,
assembly leaves every study it delivered to alone, as it does for any association still sending.
The importer sends a study's files together and, once the last one is stored, `settle` moves the
study received -> complete -> skipped with `IMPORTED_REASON`, in one transaction under its row lock:
assembly never sees it quiet and unsettled.

Why skipped and not a flag: the schema has no such flag (a migration is not this module's to write),
and skipped already means "stored, not drafted, for this reason": `echo-admin status` counts it
under its reason, retention treats it as finished (its images go after ECHO_RETENTION_DAYS unless a
signed report keeps them for retraining), and a PACS that later sends a new image of the study
reopens it like any skipped study. A study that also holds instances a PACS sent is left to
assembly.

An import stopped by an error or Ctrl-C settles the study it was in and closes its association as
aborted. One killed outright leaves its association open (assembly keeps waiting) and its last study
received; `resume`, run first by the next import, closes the one and settles the other. Only if the
node restarts in between (it closes the associations a dead process left open) can that one study be
assembled, and drafted, like any other.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from sqlalchemy import Exists, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from node.config.settings import Settings
from node.store.models import Association, Instance, Study, utcnow
from node.store.states import AssociationOutcome, StudyState
from node.store.transitions import IllegalTransition, transition

IMPORT_AE = "ECHO-IMPORT"
IMPORTED_REASON = "imported from an archive: historical, not drafted"


def _import_instance_elsewhere() -> Exists:
    """True for a study holding an instance that no import delivered (a PACS did, or nobody knows)."""
    return exists(
        select(Instance.id)
        .outerjoin(Association, Instance.association_id == Association.id)
        .where(
            Instance.study_id == Study.id,
            or_(Association.id.is_(None), Association.calling_ae != IMPORT_AE),
        )
    )


def settle(sessions: sessionmaker[Session], study_ids: Sequence[int]) -> list[int]:
    """Move the studies among `study_ids` that are still received, with every instance imported, to
    skipped (IMPORTED_REASON); returns those moved."""
    moved = []
    for study_id in study_ids:
        with sessions.begin() as session:
            study = session.get(Study, study_id, with_for_update=True)
            if study is None or study.state is not StudyState.RECEIVED:
                continue
            if session.scalar(select(_import_instance_elsewhere()).where(Study.id == study_id)):
                continue  # a PACS sent part of it: assembly decides
            try:
                transition(session, study, StudyState.COMPLETE, "imported from an archive")
                transition(session, study, StudyState.SKIPPED, IMPORTED_REASON)
            except IllegalTransition:  # moved by another process under our feet: leave it
                continue
            moved.append(study_id)
    return moved


def resume(sessions: sessionmaker[Session]) -> list[int]:
    """Close what a killed import left open and settle the studies it left in received."""
    with sessions.begin() as session:
        session.execute(
            update(Association)
            .where(Association.calling_ae == IMPORT_AE, Association.ended_at.is_(None))
            .values(
                ended_at=utcnow(),
                outcome=AssociationOutcome.ABORTED,
                reason="the import was killed before its end; resumed by a later run",
            )
        )
        left = list(
            session.scalars(
                select(Study.id)
                .where(Study.state == StudyState.RECEIVED, ~_import_instance_elsewhere())
                .where(exists(select(Instance.id).where(Instance.study_id == Study.id)))
                .order_by(Study.id)
            )
        )
    return settle(sessions, left)


def open_association(sessions: sessionmaker[Session], settings: Settings) -> int:
    with sessions.begin() as session:
        row = Association(
            calling_ae=IMPORT_AE,
            called_ae=settings.ae_title[:16],
            host=socket.gethostname()[:255] or "localhost",
            port=0,
            started_at=utcnow(),
            outcome=AssociationOutcome.ACCEPTED,
            files_stored=0,
            files_failed=0,
        )
        session.add(row)
        session.flush()
        return row.id


def close_association(
    sessions: sessionmaker[Session],
    association: int,
    outcome: AssociationOutcome,
    reason: str | None,
    stored: int,
    failed: int,
) -> None:
    with sessions.begin() as session:
        session.execute(
            update(Association)
            .where(Association.id == association)
            .values(
                ended_at=utcnow(), outcome=outcome, reason=reason, files_stored=stored, files_failed=failed
            )
        )
