"""Study assembly: the one place that decides a study is complete, and what happens to it then.

A study is complete when it is in state received, no instance of it has arrived for the quiet
period, and every association that delivered one of its instances ended at least the quiet
period ago. Then, in one transaction, it moves received -> complete -> queued (a chest
radiograph) or -> skipped (with the reason).

Publishing happens after that commit, with the study id only. ``studies.enqueued_at`` is set
once the broker took the message; a queued study whose enqueued_at is NULL is (re)published by
every sweep. So a crash between the commit and the publish, or a broker outage, delays the
message but never loses it; a crash after the publish but before enqueued_at is written
publishes it twice, and the task is idempotent (`node.store.jobs.claim_inference`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Select, and_, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from node.dicom.ingest import RADIOGRAPH_MODALITIES
from node.store.models import Association, Instance, Job, Study, utcnow
from node.store.states import JobKind, JobState, StudyState
from node.store.transitions import IllegalTransition, transition
from node.store.uids import short_uid

log = logging.getLogger(__name__)

CHEST_BODY_PARTS = frozenset({"CHEST"})


class InferencePublisher(Protocol):
    def publish_inference(self, study_id: int) -> None:
        """Hand the inference task for `study_id` to the broker; raise if the broker did not take it."""


def skip_reason(modality: str | None, body_part: str | None) -> str | None:
    """Why a study is not a chest radiograph (CR/DX, body part CHEST or unspecified); None if it is."""
    if modality not in RADIOGRAPH_MODALITIES:
        return f"modality {modality or 'unspecified'} is not CR or DX"
    if body_part is not None and body_part.upper() not in CHEST_BODY_PARTS:
        return f"body part {body_part} is not CHEST"
    return None


@dataclass
class SweepResult:
    queued: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    published: list[int] = field(default_factory=list)


def _quiet_studies(cutoff: datetime) -> Select[tuple[int]]:
    """Studies in 'received' with nothing received, and no delivering association open, since `cutoff`."""
    busy = exists(
        select(Instance.id)
        .join(Association, Instance.association_id == Association.id)
        .where(
            Instance.study_id == Study.id,
            or_(Association.ended_at.is_(None), Association.ended_at > cutoff),
        )
    )
    return (
        select(Study.id)
        .where(Study.state == StudyState.RECEIVED, Study.last_received_at <= cutoff, ~busy)
        .order_by(Study.id)
    )


class StudyAssembler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        quiet_seconds: float,
        publisher: InferencePublisher,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.quiet = timedelta(seconds=quiet_seconds)
        self.publisher = publisher
        self.clock = clock

    def sweep(self) -> SweepResult:
        result = SweepResult()
        cutoff = self.clock() - self.quiet
        with self.sessions.begin() as session:
            candidates = list(session.scalars(_quiet_studies(cutoff)))
        for study_id in candidates:
            state = self._complete(study_id, cutoff)
            if state is StudyState.QUEUED:
                result.queued.append(study_id)
            elif state is StudyState.SKIPPED:
                result.skipped.append(study_id)
        result.published = self.publish_pending()
        return result

    def _complete(self, study_id: int, cutoff: datetime) -> StudyState | None:
        """received -> complete -> queued | skipped, in one transaction; None if it is no longer quiet."""
        try:
            with self.sessions.begin() as session:
                # Asked again inside the transaction: an instance may have arrived since the scan.
                if session.scalar(_quiet_studies(cutoff).where(Study.id == study_id)) is None:
                    return None
                study = session.get_one(Study, study_id)
                transition(
                    session,
                    study,
                    StudyState.COMPLETE,
                    f"no instance for {self.quiet.total_seconds():g} s after its associations ended",
                )
                reason = skip_reason(study.modality, study.body_part)
                if reason is None:
                    transition(session, study, StudyState.QUEUED, "chest radiograph: inference requested")
                else:
                    transition(session, study, StudyState.SKIPPED, reason)
                accession, study_uid = study.accession_number, study.study_instance_uid
        except IllegalTransition as error:  # another node process moved it first
            log.info("assembly left study %d alone: %s", study_id, error)
            return None
        outcome = StudyState.QUEUED if reason is None else StudyState.SKIPPED
        log.info(
            "study %s (accession %s) complete: %s%s",
            short_uid(study_uid),
            accession,
            outcome,
            f" ({reason})" if reason else "",
        )
        return outcome

    def publish_pending(self) -> list[int]:
        """Publish every queued study not yet handed to the broker; stops at the first broker failure."""
        with self.sessions.begin() as session:
            pending = list(
                session.scalars(
                    select(Study.id)
                    .where(Study.state == StudyState.QUEUED, Study.enqueued_at.is_(None))
                    .order_by(Study.id)
                )
            )
        published = []
        for study_id in pending:
            try:
                self.publisher.publish_inference(study_id)
            except Exception as error:  # any broker/transport failure: keep it pending, try next sweep
                log.warning(
                    "broker did not take the task for study %d (%s); %d studies wait to be published",
                    study_id,
                    type(error).__name__,
                    len(pending) - len(published),
                )
                break
            with self.sessions.begin() as session:
                session.execute(
                    update(Study)
                    .where(Study.id == study_id, Study.enqueued_at.is_(None))
                    .values(enqueued_at=self.clock())
                )
            published.append(study_id)
        return published

    def republish_unfinished(self) -> int:
        """Mark queued studies without a finished inference for publishing again; returns how many.

        For the embedded broker at node start: kombu's SQL transport forgets a message its (now
        dead) worker had fetched, so those studies would otherwise wait forever. Messages that
        are still in the broker become duplicates, which the task ignores.
        """
        finished = exists(
            select(Job.id).where(
                and_(Job.study_id == Study.id, Job.kind == JobKind.INFER, Job.state == JobState.SUCCEEDED)
            )
        )
        with self.sessions.begin() as session:
            result = session.execute(
                update(Study)
                .where(Study.state == StudyState.QUEUED, Study.enqueued_at.is_not(None), ~finished)
                .values(enqueued_at=None)
                .execution_options(synchronize_session=False)
            )
        return result.rowcount
