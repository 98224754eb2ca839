"""Study assembly: the one place that decides a study is complete, and what happens to it then.

A study is complete when it is in state received, no instance of it has arrived for the quiet
period, and every association that delivered one of its instances ended at least the quiet
period ago. Then, in one transaction, it moves received -> complete -> queued (a chest
radiograph, see `node.dicom.chest`), -> skipped (with the reason: another body part or modality, a
lateral view alone), or -> failed when its instances disagree on who the patient is or on the order
(studies.identity_conflict names the attribute; such a study is never drafted).

Publishing happens after that commit, with the study id only. ``studies.enqueued_at`` is set
once the broker took the message; a queued study whose enqueued_at is NULL is (re)published by
every sweep. So a crash between the commit and the publish, or a broker outage, delays the
message but never loses it; a crash after the publish but before enqueued_at is written
publishes it twice, and the task is idempotent (`node.store.jobs.claim_inference`).

A study drafted from a non-frontal view comes back to queued when its frontal arrives
(`node.dicom.ingest`, `node.store.redraft`), with enqueued_at NULL: the same sweep publishes it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from pydicom import dcmread
from sqlalchemy import Select, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from node.dicom.chest import ChestDecision, ImageFacts, decide, facts_from_dataset, text_value
from node.dicom.identity_conflicts import IDENTITY_ATTRIBUTES, disagreeing, identity_conflict
from node.store.models import Association, Instance, Job, Study, utcnow
from node.store.redraft import redraft_requested
from node.store.states import JobKind, JobState, StudyState
from node.store.transitions import IllegalTransition, transition
from node.store.uids import short_uid

log = logging.getLogger(__name__)


class InferencePublisher(Protocol):
    def publish_inference(self, study_id: int) -> None:
        """Hand the inference task for `study_id` to the broker; raise if the broker did not take it."""


@dataclass
class SweepResult:
    queued: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)  # not drafted: the instances disagree on the patient
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


def skip_counts(session: Session) -> dict[str, int]:
    """Skipped studies per reason, most frequent first (what an operator's overview shows)."""
    rows = session.execute(
        select(Study.skip_reason, func.count())
        .where(Study.state == StudyState.SKIPPED)
        .group_by(Study.skip_reason)
        .order_by(func.count().desc())
    )
    return {reason or "": count for reason, count in rows}


@dataclass(frozen=True)
class _StoredInstance:
    id: int
    received_at: datetime
    path: str
    view_position: str | None


@dataclass(frozen=True)
class _Snapshot:
    """A study as its headers were read: assembly decides only if nothing changed since."""

    last_received_at: datetime
    instances: tuple[_StoredInstance, ...]
    modality: str | None
    body_part: str | None

    @property
    def fingerprint(self) -> tuple[object, ...]:
        return (self.last_received_at, tuple((i.id, i.received_at, i.path) for i in self.instances))


def _snapshot(session: Session, study: Study) -> _Snapshot:
    rows = session.execute(
        select(Instance.id, Instance.received_at, Instance.path, Instance.view_position)
        .where(Instance.study_id == study.id)
        .order_by(Instance.id)
    )
    return _Snapshot(
        study.last_received_at,
        tuple(_StoredInstance(*row) for row in rows),
        study.modality,
        study.body_part,
    )


@dataclass(frozen=True)
class _Headers:
    facts: list[ImageFacts]
    conflicts: list[str]  # identity attributes the instances disagree on


def _read_headers(study_id: int, snapshot: _Snapshot) -> _Headers:
    """Every stored instance's anatomy, view and identity, read from the spool (pixels not read).

    An unreadable file counts with what its database row knows (the study's modality and body part,
    the instance's view position) and takes no part in the identity comparison.
    """
    facts: list[ImageFacts] = []
    known: dict[str, str | None] = dict.fromkeys(IDENTITY_ATTRIBUTES)
    conflicts: set[str] = set()
    for instance in snapshot.instances:
        try:
            dataset = dcmread(instance.path, stop_before_pixels=True)
            image = facts_from_dataset(dataset)
            seen = {name: text_value(dataset, name) for name in IDENTITY_ATTRIBUTES}
        except Exception as error:  # missing file, damaged header
            log.warning(
                "study %d: stored instance %d unreadable (%s); decided from its database row",
                study_id,
                instance.id,
                type(error).__name__,
            )
            facts.append(ImageFacts(snapshot.modality, snapshot.body_part, instance.view_position))
            continue
        facts.append(image)
        conflicts.update(disagreeing(known, seen))
        for name, value in seen.items():
            known[name] = known[name] or value
    return _Headers(facts, [name for name in IDENTITY_ATTRIBUTES if name in conflicts])


class StudyAssembler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        quiet_seconds: float,
        publisher: InferencePublisher,
        clock: Callable[[], datetime] = utcnow,
        *,
        draft_lateral_only: bool = False,
    ) -> None:
        self.sessions = sessions
        self.quiet = timedelta(seconds=quiet_seconds)
        self.publisher = publisher
        self.clock = clock
        self.draft_lateral_only = draft_lateral_only
        self.skips: Counter[str] = Counter()  # skip reason -> studies skipped by this process

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
            elif state is StudyState.FAILED:
                result.failed.append(study_id)
        result.published = self.publish_pending()
        return result

    def decide(self, facts: Sequence[ImageFacts]) -> ChestDecision:
        return decide(facts, allow_lateral_only=self.draft_lateral_only)

    def _complete(self, study_id: int, cutoff: datetime) -> StudyState | None:
        """received -> complete -> queued | skipped | failed; None if it is no longer quiet.

        The headers are read before the deciding transaction (no file I/O while the row is locked).
        That transaction locks the study row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN
        IMMEDIATE serialises anyway): an instance being stored holds the same lock, so assembly waits
        for it, then sees that the study changed since its headers were read and leaves it received.
        """
        with self.sessions.begin() as session:
            study = session.get(Study, study_id)
            if study is None or study.state is not StudyState.RECEIVED:
                return None
            snapshot = _snapshot(session, study)
        headers = _read_headers(study_id, snapshot)
        decision = self.decide(headers.facts)
        try:
            with self.sessions.begin() as session:
                study = session.get(Study, study_id, with_for_update=True)
                if study is None or study.state is not StudyState.RECEIVED:
                    return None
                if _snapshot(session, study).fingerprint != snapshot.fingerprint:
                    return None  # an instance arrived (or was re-sent) while the headers were read
                # Asked again under the lock: an association may have delivered since the scan.
                if session.scalar(_quiet_studies(cutoff).where(Study.id == study_id)) is None:
                    return None
                transition(
                    session,
                    study,
                    StudyState.COMPLETE,
                    f"no instance for {self.quiet.total_seconds():g} s after its associations ended",
                )
                conflict = identity_conflict(study.identity_conflict, headers.conflicts)
                if conflict:
                    study.identity_conflict = conflict
                    outcome, reason = StudyState.FAILED, f"{conflict}: not drafted"
                elif decision.draft:
                    outcome, reason = StudyState.QUEUED, f"{decision.reason}: inference requested"
                else:
                    outcome, reason = StudyState.SKIPPED, decision.reason
                transition(session, study, outcome, reason)
                study_uid = study.study_instance_uid
        except IllegalTransition as error:  # another node process moved it first
            log.info("assembly left study %d alone: %s", study_id, error)
            return None
        if outcome is StudyState.FAILED:
            log.warning("study %d (%s) complete: failed (%s)", study_id, short_uid(study_uid), reason)
        elif outcome is StudyState.SKIPPED:
            self.skips[reason] += 1
            log.info(
                "study %d (%s) complete: skipped (%s); %d skipped for this reason since start",
                study_id,
                short_uid(study_uid),
                reason,
                self.skips[reason],
            )
        else:
            log.info("study %d (%s) complete: queued (%s)", study_id, short_uid(study_uid), decision.reason)
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
        are still in the broker become duplicates, which the task ignores. A study queued again for
        a corrected draft has succeeded attempts of its earlier round only: it counts as unfinished.
        """
        finished = exists(
            select(Job.id).where(
                and_(Job.study_id == Study.id, Job.kind == JobKind.INFER, Job.state == JobState.SUCCEEDED)
            )
        )
        with self.sessions.begin() as session:
            waiting = session.execute(
                select(Study.id, finished)
                .where(Study.state == StudyState.QUEUED, Study.enqueued_at.is_not(None))
                .order_by(Study.id)
            ).all()
            unfinished = [
                study_id for study_id, done in waiting if not done or redraft_requested(session, study_id)
            ]
            if unfinished:
                session.execute(
                    update(Study)
                    .where(Study.id.in_(unfinished), Study.state == StudyState.QUEUED)
                    .values(enqueued_at=None)
                    .execution_options(synchronize_session=False)
                )
        return len(unfinished)
