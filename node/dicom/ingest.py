"""Storing one received instance: read its identifiers, write the file, record it. No DICOM networking here.

The SCP calls `Ingestor.store` once per C-STORE and answers with the DIMSE status that
`node.dicom.dimse_status` maps the returned `IngestResult` to. Success is returned only after the file
is renamed into place and the database rows are committed. A failure before the rename (a header
refused, the disk full) leaves the earlier copy of the instance untouched; a database failure after
it leaves the new file in place but unrecorded, and the sender is told to send again (the re-send
replaces the file in one rename, see `node.dicom.spool`, and records it).

An instance for a study that is no longer being received is stored and, as a rule, changes nothing.
Two exceptions, decided under the study's row lock: a CR/DX instance reopens a skipped study (the
frontal a lateral waited for), and a frontal chest radiograph sends a drafted study (inferred or
delivered) whose draft was read from a non-frontal view back to the queue for a corrected draft
(`node.store.redraft`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.dicom.chest import RADIOGRAPH_MODALITIES, ImageFacts, View, decide, text_value, view_of
from node.dicom.header import HeaderError, InstanceHeader, read_header, read_header_file
from node.dicom.outcome import IngestOutcome, IngestResult, ReceivedInstance
from node.dicom.spool import Spool
from node.store.models import Instance, Study, utcnow
from node.store.redraft import REDRAFT_REASON, draft_needs_a_frontal, request_redraft
from node.store.states import StudyState
from node.store.transitions import IllegalTransition, record_creation, transition
from node.store.uids import short_uid

log = logging.getLogger(__name__)

# Who a study is about: its instances must agree on each of these (both present and different is a
# conflict; a missing value is not). Reasons name the attribute, never its values.
IDENTITY_ATTRIBUTES = ("PatientID", "IssuerOfPatientID", "AccessionNumber")
_CONFLICT_PREFIX = "instances disagree on "
REOPEN_REASON = "a CR/DX instance arrived after the skip: assembled again"
# A drafted study is known to be a chest radiograph: a late frontal is re-drafted unless it names
# another body part itself (a hand PA sent to the chest study's UID is not read in its place).
_DRAFTED_CHEST = ImageFacts(modality="CR", body_part="CHEST")


def identity_conflict(existing: str | None, attributes: Iterable[str]) -> str | None:
    """`existing` (a studies.identity_conflict value) with `attributes` added, in a fixed order."""
    named = set(attributes)
    if existing:
        named.update(existing.removeprefix(_CONFLICT_PREFIX).split(", "))
    ordered = [name for name in IDENTITY_ATTRIBUTES if name in named]
    return _CONFLICT_PREFIX + ", ".join(ordered) if ordered else existing


def disagreeing(known: dict[str, str | None], seen: dict[str, str | None]) -> list[str]:
    """The identity attributes present in both and different, in IDENTITY_ATTRIBUTES order."""
    return [
        name
        for name in IDENTITY_ATTRIBUTES
        if known.get(name) is not None and seen.get(name) is not None and known[name] != seen[name]
    ]


class Ingestor:
    def __init__(
        self, sessions: sessionmaker[Session], spool: Spool, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.sessions = sessions
        self.spool = spool
        self.clock = clock

    def store(self, received: ReceivedInstance) -> IngestResult:
        """Store the instance held in `received.encoded`."""
        return self._ingest(
            received,
            lambda: read_header(received.encoded),
            lambda path: self.spool.write(path, received.encoded),
        )

    def store_file(self, received: ReceivedInstance, source: Path) -> IngestResult:
        """`store` for a data set already on disk at `source` (streamed there by the SCP, on the spool's
        file system): its header is read without the pixel data and the file is renamed into the
        spool, so a large instance is never held in memory. `received.encoded` is not used. A refused
        instance leaves `source` in place for the caller to delete.
        """
        return self._ingest(
            received, lambda: read_header_file(source), lambda path: self.spool.move_into(path, source)
        )

    def _ingest(
        self,
        received: ReceivedInstance,
        read: Callable[[], InstanceHeader],
        place: Callable[[Path], None],
    ) -> IngestResult:
        try:
            header = read()
        except HeaderError as error:
            log.warning("refused instance %s: %s", short_uid(received.sop_instance_uid), error.detail)
            return IngestResult(error.outcome, error.detail)
        if (
            header.sop_instance_uid != received.sop_instance_uid
            or header.sop_class_uid != received.sop_class_uid
        ):
            detail = "SOP Class/Instance UID of the data set differ from the request"
            log.warning("refused instance %s: %s", short_uid(received.sop_instance_uid), detail)
            return IngestResult(IngestOutcome.UID_MISMATCH, detail)
        path = self.spool.path_for(
            header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
        )
        try:
            place(path)
        except OSError as error:
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            detail = f"cannot write file: {error.strerror or type(error).__name__}"
            log.error("instance %s not stored: %s", short_uid(header.sop_instance_uid), detail)
            return IngestResult(IngestOutcome.DISK_FULL if full else IngestOutcome.DISK_ERROR, detail)
        try:
            return self._record(header, received, path)
        except SQLAlchemyError as error:
            # str(error) would carry the SQL parameters (patient data): name the failure only.
            cause = type(getattr(error, "orig", None) or error).__name__
            log.error(
                "instance %s not recorded: database error %s", short_uid(header.sop_instance_uid), cause
            )
            return IngestResult(IngestOutcome.DATABASE_ERROR, f"database error ({cause})")

    def _record(self, header: InstanceHeader, received: ReceivedInstance, path: Path) -> IngestResult:
        now = self.clock()
        with self.sessions.begin() as session:
            study, conflicts, moved = self._study_for(session, header, now)
            fields = {
                "study_id": study.id,
                "association_id": received.association_id,
                "series_instance_uid": header.series_instance_uid,
                "sop_class_uid": header.sop_class_uid,
                "path": str(path),
                "size": path.stat().st_size,  # the bytes as received (store_file has no `encoded`)
                "transfer_syntax_uid": received.transfer_syntax_uid,
                "view_position": header.view_position,
                "received_at": now,
            }
            instance, again = _upsert_instance(session, header.sop_instance_uid, fields)
            replaced_path = instance.path if again and instance.path != str(path) else None
            for name, value in fields.items():
                setattr(instance, name, value)
            study_id, state = study.id, study.state
        if replaced_path:  # re-sent under another study or series: the old copy is now stale
            with contextlib.suppress(OSError):
                Path(replaced_path).unlink()
        if moved == REOPEN_REASON:
            log.info("study %d reopened: %s", study_id, REOPEN_REASON)
        elif moved == REDRAFT_REASON:
            log.info("study %d queued again: %s", study_id, REDRAFT_REASON)
        elif state is not StudyState.RECEIVED:
            log.warning(
                "late instance %s for study %d in state %s: stored, study not re-queued",
                short_uid(header.sop_instance_uid),
                study_id,
                state,
            )
            conflicts = conflicts or self._late_issuer_conflict(study_id, header)
        if conflicts:
            log.warning(
                "study %d: instance %s disagrees with the study on %s; the study will not be drafted",
                study_id,
                short_uid(header.sop_instance_uid),
                ", ".join(conflicts),
            )
        log.debug("stored instance %s of study %d", short_uid(header.sop_instance_uid), study_id)
        outcome = IngestOutcome.STORED_AGAIN if again else IngestOutcome.STORED
        return IngestResult(outcome, "stored again" if again else "stored", study_id)

    def _study_for(
        self, session: Session, header: InstanceHeader, now: datetime
    ) -> tuple[Study, list[str], str | None]:
        """The study row, locked until commit; the identity attributes this instance contradicts; and
        the reason when the instance moved the study (REOPEN_REASON, REDRAFT_REASON), else None.

        The row lock (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises anyway)
        makes assembly, which takes the same lock, wait until this instance is recorded, and makes
        this transaction see the state assembly committed.
        """
        query = select(Study).where(Study.study_instance_uid == header.study_instance_uid)
        study = session.scalar(query.with_for_update())
        if study is None:
            try:
                with session.begin_nested():
                    study = Study(
                        study_instance_uid=header.study_instance_uid,
                        state=StudyState.RECEIVED,
                        first_received_at=now,
                        last_received_at=now,
                    )
                    session.add(study)
                    session.flush()
                    record_creation(session, study, "first instance received")
                log.info("new study %d (%s)", study.id, short_uid(header.study_instance_uid))
            except IntegrityError:  # another association created it a moment ago
                study = session.scalars(query.with_for_update()).one()
        conflicts = disagreeing(
            {"PatientID": study.patient_id, "AccessionNumber": study.accession_number},
            {"PatientID": header.patient_id, "AccessionNumber": header.accession_number},
        )
        if conflicts:
            study.identity_conflict = identity_conflict(study.identity_conflict, conflicts)
        study.last_received_at = now
        study.accession_number = study.accession_number or header.accession_number
        study.patient_id = study.patient_id or header.patient_id
        # A radiograph's modality and body part decide the study; a PR or SR sent first must not.
        study_is_radiograph = study.modality in RADIOGRAPH_MODALITIES
        if study.modality is None or (not study_is_radiograph and header.modality in RADIOGRAPH_MODALITIES):
            study.modality = header.modality
            study.body_part = header.body_part
        elif study.body_part is None and header.modality == study.modality:
            study.body_part = header.body_part
        if study.state is StudyState.SKIPPED and header.modality in RADIOGRAPH_MODALITIES:
            # e.g. the frontal a lateral-only study was waiting for
            transition(session, study, StudyState.RECEIVED, REOPEN_REASON)
            return study, conflicts, REOPEN_REASON
        if (
            not conflicts
            and not study.identity_conflict
            and frontal_chest_radiograph(header.facts)
            and draft_needs_a_frontal(session, study)
        ):
            try:
                with session.begin_nested():
                    request_redraft(session, study)
            except IllegalTransition as error:  # moved by another process under our feet: leave it
                log.warning("study %d not queued again: %s", study.id, error)
                return study, conflicts, None
            return study, conflicts, REDRAFT_REASON
        return study, conflicts, None

    def _late_issuer_conflict(self, study_id: int, header: InstanceHeader) -> list[str]:
        """For an instance arriving after assembly: does its IssuerOfPatientID contradict the study's?

        The study row keeps no issuer, so another instance's stored header is asked. While the study
        is still being received, assembly compares every instance's header instead.
        """
        if header.issuer_of_patient_id is None:
            return []
        with self.sessions() as session:
            sibling = session.scalar(
                select(Instance.path)
                .where(Instance.study_id == study_id, Instance.sop_instance_uid != header.sop_instance_uid)
                .order_by(Instance.id)
                .limit(1)
            )
        if sibling is None:
            return []
        try:
            known = text_value(dcmread(sibling, stop_before_pixels=True), "IssuerOfPatientID")
        except Exception:  # gone or unreadable: nothing to compare with
            return []
        conflicts = disagreeing(
            {"IssuerOfPatientID": known}, {"IssuerOfPatientID": header.issuer_of_patient_id}
        )
        if conflicts:
            with self.sessions.begin() as session:
                study = session.get_one(Study, study_id, with_for_update=True)
                study.identity_conflict = identity_conflict(study.identity_conflict, conflicts)
        return conflicts


def frontal_chest_radiograph(image: ImageFacts) -> bool:
    """Whether a late image may correct a draft of its (chest) study: a CR/DX frontal view, by the
    worker's view ladder, naming no body part other than the chest."""
    if image.modality not in RADIOGRAPH_MODALITIES or view_of(image) is not View.FRONTAL:
        return False
    return decide([image, _DRAFTED_CHEST]).draft


def _upsert_instance(
    session: Session, sop_instance_uid: str, fields: dict[str, object]
) -> tuple[Instance, bool]:
    """The instance row for `sop_instance_uid` and whether it existed (a concurrent insert counts)."""
    query = select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
    existing = session.scalar(query)
    if existing is not None:
        return existing, True
    try:
        with session.begin_nested():
            instance = Instance(sop_instance_uid=sop_instance_uid, **fields)
            session.add(instance)
        return instance, False
    except IntegrityError:  # another association inserted it between our SELECT and INSERT
        return session.scalars(query).one(), True
