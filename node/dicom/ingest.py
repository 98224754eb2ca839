"""Storing one received instance: read its identifiers, write the file, record it. No DICOM networking here.

The SCP calls `Ingestor.store` once per C-STORE and answers with the DIMSE status that
`node.dicom.dimse_status` maps the returned `IngestResult` to. Success is returned only after the file
is renamed into place and fsynced (`node.dicom.spool`) and the instance's rows are committed: the
rows are written by one writer thread, several instances per transaction (`node.dicom.writer`), with
a few plain statements (`record`) rather than ORM objects, while the association's own thread runs the
file's fsync; the transaction commits only once that fsync returned. The spool is the source of truth: a file
whose rows a power cut took is restored at start (`node.dicom.recover`). A failure before the rename
(a header refused, the disk full) leaves the earlier copy of the instance untouched; a database
failure after it leaves the new file in place but unrecorded, and the sender is told to send again
(the re-send replaces the file in one rename and records it).

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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from node.dicom.association_log import LiveAssociation, insert_row
from node.dicom.chest import RADIOGRAPH_MODALITIES, ImageFacts, View, decide, text_value, view_of
from node.dicom.header import HeaderError, InstanceHeader, read_header, read_header_file
from node.dicom.identity_conflicts import disagreeing, identity_conflict
from node.dicom.outcome import IngestOutcome, IngestResult, ReceivedInstance
from node.dicom.spool import Placed, Spool
from node.dicom.writer import GroupCommit, NotSettled
from node.store.models import Instance, Study, StudyEvent, utcnow
from node.store.redraft import REDRAFT_FROM, REDRAFT_REASON, draft_needs_a_frontal, request_redraft
from node.store.states import StudyState
from node.store.transitions import IllegalTransition, transition
from node.store.uids import short_uid

log = logging.getLogger(__name__)

REOPEN_REASON = "a CR/DX instance arrived after the skip: assembled again"
FIRST_RECEIVED = "first instance received"
# A drafted study is known to be a chest radiograph: a late frontal is re-drafted unless it names
# another body part itself (a hand PA sent to the chest study's UID is not read in its place).
_DRAFTED_CHEST = ImageFacts(modality="CR", body_part="CHEST")


@dataclass(frozen=True)
class Arrival:
    """An instance whose file is in the spool, on its way to the writer (`node.dicom.writer`)."""

    header: InstanceHeader
    path: Path
    size: int
    transfer_syntax_uid: str
    association_id: int | None = None
    association: LiveAssociation | None = None  # its row is written with this instance if it has none


@dataclass(frozen=True)
class Recorded:
    """What the instance's transaction did, for the answer and the log lines after its commit."""

    study_id: int
    state: StudyState
    created: bool
    conflicts: list[str]
    moved: str | None  # REOPEN_REASON, REDRAFT_REASON or None
    again: bool
    replaced_path: str | None  # the earlier copy's file, when the re-sent instance moved
    association_id: int | None


class Ingestor:
    def __init__(
        self, sessions: sessionmaker[Session], spool: Spool, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.sessions = sessions
        self.spool = spool
        self.clock = clock
        self.writer: GroupCommit[Arrival, Recorded] = GroupCommit(sessions, record, clock)

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

    def restore(self, path: Path, header: InstanceHeader) -> IngestResult:
        """Record a file found in the spool without its row (`node.dicom.recover`): as if received now."""
        syntax = header.transfer_syntax_uid or ""
        found = Placed(path, new=False)  # never removed: an fsync failure leaves it for the next start
        return self._recorded(header, Arrival(header, path, path.stat().st_size, syntax), found.sync)

    def _ingest(
        self,
        received: ReceivedInstance,
        read: Callable[[], InstanceHeader],
        place: Callable[[Path], Placed],
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
            placed = place(path)
            size = path.stat().st_size  # the bytes as received (store_file has no `encoded`)
        except OSError as error:
            return _not_written(header, error)
        arrival = Arrival(
            header, path, size, received.transfer_syntax_uid, received.association_id, received.association
        )
        return self._recorded(header, arrival, placed.sync)

    def _recorded(
        self, header: InstanceHeader, arrival: Arrival, sync: Callable[[], None] | None = None
    ) -> IngestResult:
        """Hand `arrival` to the writer, `sync` its file meanwhile (the rows commit only after it),
        wait for the commit, then log what it did."""
        try:
            recorded = self.writer.submit(arrival, sync)
        except OSError as error:  # the fsync failed: the rows were not committed, the new file is gone
            return _not_written(header, error)
        except NotSettled as error:
            log.error("instance %s not stored: %s", short_uid(header.sop_instance_uid), error)
            return IngestResult(
                IngestOutcome.DISK_ERROR, "cannot write file: the disk did not answer in time"
            )
        except SQLAlchemyError as error:
            # str(error) would carry the SQL parameters (patient data): name the failure only.
            cause = type(getattr(error, "orig", None) or error).__name__
            log.error(
                "instance %s not recorded: database error %s", short_uid(header.sop_instance_uid), cause
            )
            return IngestResult(IngestOutcome.DATABASE_ERROR, f"database error ({cause})")
        if arrival.association is not None and arrival.association.id is None:
            arrival.association.id = recorded.association_id  # its row came with this instance
        self._after_commit(header, recorded)
        outcome = IngestOutcome.STORED_AGAIN if recorded.again else IngestOutcome.STORED
        return IngestResult(outcome, "stored again" if recorded.again else "stored", recorded.study_id)

    def _after_commit(self, header: InstanceHeader, recorded: Recorded) -> None:
        study_id, conflicts = recorded.study_id, recorded.conflicts
        if recorded.replaced_path:  # re-sent under another study or series: the old copy is now stale
            with contextlib.suppress(OSError):
                Path(recorded.replaced_path).unlink()
        if recorded.created:
            log.info("new study %d (%s)", study_id, short_uid(header.study_instance_uid))
        if recorded.moved == REOPEN_REASON:
            log.info("study %d reopened: %s", study_id, REOPEN_REASON)
        elif recorded.moved == REDRAFT_REASON:
            log.info("study %d queued again: %s", study_id, REDRAFT_REASON)
        elif recorded.state is not StudyState.RECEIVED:
            log.warning(
                "late instance %s for study %d in state %s: stored, study not re-queued",
                short_uid(header.sop_instance_uid),
                study_id,
                recorded.state,
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


# --- the instance's transaction (run by the writer thread, several instances per transaction) ----------
# Plain statements built once: no ORM objects and no statement building per instance.

_studies, _instances, _events = Study.__table__, Instance.__table__, StudyEvent.__table__
_SELECT_STUDY = (
    select(
        _studies.c.id,
        _studies.c.state,
        _studies.c.patient_id,
        _studies.c.accession_number,
        _studies.c.modality,
        _studies.c.body_part,
        _studies.c.identity_conflict,
    )
    .where(_studies.c.study_instance_uid == bindparam("b_uid"))
    .with_for_update()
)
_INSERT_STUDY = insert(_studies).returning(_studies.c.id)
_UPDATE_STUDY = update(_studies).where(_studies.c.id == bindparam("b_id"))  # SET: the parameters given
_INSERT_EVENT = insert(_events)
_SELECT_INSTANCE = select(_instances.c.id, _instances.c.path).where(
    _instances.c.sop_instance_uid == bindparam("b_uid")
)
_INSERT_INSTANCE = insert(_instances)
_UPDATE_INSTANCE = update(_instances).where(_instances.c.id == bindparam("b_id"))


def record(session: Session, arrival: Arrival, now: datetime) -> Recorded:
    """The rows of one stored instance, in the writer's transaction: its study (created, or locked and
    updated, maybe reopened or sent back for a re-draft), its association's row if it has none yet,
    and its own row (inserted, or updated when it was stored before)."""
    header = arrival.header
    study_id, state, created, conflicts, moved = _study_for(session, header, now)
    association_id = arrival.association_id
    if arrival.association is not None:
        association_id = arrival.association.id or insert_row(session, arrival.association)
    fields = {
        "study_id": study_id,
        "association_id": association_id,
        "series_instance_uid": header.series_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        "path": str(arrival.path),
        "size": arrival.size,
        "transfer_syntax_uid": arrival.transfer_syntax_uid,
        "view_position": header.view_position,
        "received_at": now,
    }
    again, earlier_path = _upsert_instance(session, header.sop_instance_uid, fields)
    replaced = earlier_path if again and earlier_path != str(arrival.path) else None
    return Recorded(study_id, state, created, conflicts, moved, again, replaced, association_id)


def _study_for(
    session: Session, header: InstanceHeader, now: datetime
) -> tuple[int, StudyState, bool, list[str], str | None]:
    """(study id, its state now, whether it was created, the identity attributes this instance
    contradicts, the reason when the instance moved the study: REOPEN_REASON, REDRAFT_REASON or None).

    The row lock (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises anyway)
    makes assembly, which takes the same lock, wait until this instance is recorded, and makes
    this transaction see the state assembly committed. A study another process creates between the
    SELECT and the INSERT fails the transaction, and the writer tries the instance again alone.
    """
    connection = session.connection()
    row = connection.execute(_SELECT_STUDY, {"b_uid": header.study_instance_uid}).first()
    if row is None:
        return _new_study(connection, header, now), StudyState.RECEIVED, True, [], None
    conflicts = disagreeing(
        {"PatientID": row.patient_id, "AccessionNumber": row.accession_number},
        {"PatientID": header.patient_id, "AccessionNumber": header.accession_number},
    )
    values: dict[str, object] = {"b_id": row.id, "last_received_at": now, "updated_at": now}
    if conflicts:
        values["identity_conflict"] = identity_conflict(row.identity_conflict, conflicts)
    if row.accession_number is None and header.accession_number is not None:
        values["accession_number"] = header.accession_number
    if row.patient_id is None and header.patient_id is not None:
        values["patient_id"] = header.patient_id
    # A radiograph's modality and body part decide the study; a PR or SR sent first must not.
    study_is_radiograph = row.modality in RADIOGRAPH_MODALITIES
    if row.modality is None or (not study_is_radiograph and header.modality in RADIOGRAPH_MODALITIES):
        values["modality"], values["body_part"] = header.modality, header.body_part
    elif row.body_part is None and header.modality == row.modality:
        values["body_part"] = header.body_part
    connection.execute(_UPDATE_STUDY, values)
    if row.state is StudyState.SKIPPED and header.modality in RADIOGRAPH_MODALITIES:
        # e.g. the frontal a lateral-only study was waiting for
        transition(session, session.get_one(Study, row.id), StudyState.RECEIVED, REOPEN_REASON)
        return row.id, StudyState.RECEIVED, False, conflicts, REOPEN_REASON
    if (
        not conflicts
        and not row.identity_conflict
        and row.state in REDRAFT_FROM
        and frontal_chest_radiograph(header.facts)
        and _redraft(session, row.id)
    ):
        return row.id, StudyState.QUEUED, False, conflicts, REDRAFT_REASON
    return row.id, row.state, False, conflicts, None


def _new_study(connection: Connection, header: InstanceHeader, now: datetime) -> int:
    """Insert the study in state received, with its creation in study_events; returns its id."""
    study = {
        "study_instance_uid": header.study_instance_uid,
        "state": StudyState.RECEIVED,
        "first_received_at": now,
        "last_received_at": now,
        "accession_number": header.accession_number,
        "patient_id": header.patient_id,
        "modality": header.modality,
        "body_part": header.body_part,
        "created_at": now,
        "updated_at": now,
    }
    study_id: int = connection.execute(_INSERT_STUDY, study).scalar_one()
    event = {"study_id": study_id, "from_state": None, "to_state": StudyState.RECEIVED, "at": now}
    connection.execute(_INSERT_EVENT, {**event, "reason": FIRST_RECEIVED})
    return study_id


def _redraft(session: Session, study_id: int) -> bool:
    """Send a drafted study back to the queue if its draft was read from a non-frontal view."""
    study = session.get_one(Study, study_id)
    if not draft_needs_a_frontal(session, study):
        return False
    try:
        with session.begin_nested():
            request_redraft(session, study)
    except IllegalTransition as error:  # moved by another process under our feet: leave it
        log.warning("study %d not queued again: %s", study_id, error)
        return False
    return True


def _not_written(header: InstanceHeader, error: OSError) -> IngestResult:
    """The disk refused the file (written, renamed or fsynced): out of resources, full or not."""
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    detail = f"cannot write file: {error.strerror or type(error).__name__}"
    log.error("instance %s not stored: %s", short_uid(header.sop_instance_uid), detail)
    return IngestResult(IngestOutcome.DISK_FULL if full else IngestOutcome.DISK_ERROR, detail)


def frontal_chest_radiograph(image: ImageFacts) -> bool:
    """Whether a late image may correct a draft of its (chest) study: a CR/DX frontal view, by the
    worker's view ladder, naming no body part other than the chest."""
    if image.modality not in RADIOGRAPH_MODALITIES or view_of(image) is not View.FRONTAL:
        return False
    return decide([image, _DRAFTED_CHEST]).draft


def _upsert_instance(
    session: Session, sop_instance_uid: str, fields: dict[str, object]
) -> tuple[bool, str | None]:
    """Insert the row for `sop_instance_uid`, or update it when the instance was stored before:
    (whether it was, the earlier copy's path)."""
    connection = session.connection()
    existing = connection.execute(_SELECT_INSTANCE, {"b_uid": sop_instance_uid}).first()
    if existing is None:
        connection.execute(_INSERT_INSTANCE, {"sop_instance_uid": sop_instance_uid, **fields})
        return False, None
    connection.execute(_UPDATE_INSTANCE, {"b_id": existing.id, **fields})
    return True, existing.path
