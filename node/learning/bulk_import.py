"""`echo-admin import`: a historical archive of images and signed reports, for a cold start.

Images: every file under the DICOM folder goes through the node's own ingest path
(`node.dicom.ingest.Ingestor.store`, what a C-STORE calls), so studies, instances and spool files are
exactly what a PACS sending them would have made; files are grouped by Study Instance UID and sent
one study at a time, and each study is then set aside as historical, never drafted
(`node.learning.historical` says how, and why that way).

Signed reports go through `store_signed` (source import, message key `import|<accession or study
UID>|<sha256 of the text>[:16]`, `node.learning.archive_rows`), then `match_pending` matches
whatever still waited for its study. A row for an order the RIS already sent a signed report for is
refused: the live report wins.

Resumable and idempotent: a file whose SOP Instance UID is stored with its spool file present is
"already there" and not sent again; a report row stored before is a duplicate. A crashed run is
finished by the next (`historical.resume` first). Unreadable files and bad rows are counted with
their reason, never fatal; a disk or database failure stops the run (the next one resumes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from rich.progress import Progress
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError
from node.config.settings import Settings
from node.dicom.ingest import Ingestor
from node.dicom.outcome import IngestOutcome, ReceivedInstance
from node.dicom.spool import Spool
from node.learning.archive_rows import ArchiveRow, read_rows, signed_from_row
from node.learning.historical import close_association, open_association, resume, settle
from node.learning.signed import current_for, match_pending, store_signed
from node.store.models import Instance, SignedReport
from node.store.retention import is_purged
from node.store.states import AssociationOutcome, SignedSource

LOCK_NAME = ".import.lock"
REPORT_BATCH = 200  # report rows per transaction
MAX_EXAMPLES = 10
_FATAL = (IngestOutcome.DISK_FULL, IngestOutcome.DISK_ERROR, IngestOutcome.DATABASE_ERROR)


@dataclass
class Tally:
    """How many were turned away, how many for each reason, and the first few places."""

    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        self.count += 1
        self.reasons[why] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {why}")


@dataclass
class ImportSummary:
    files_stored: int = 0
    files_already: int = 0  # stored before (an earlier run, or the PACS): not sent again
    unreadable: Tally = field(default_factory=Tally)
    settled: set[int] = field(default_factory=set)  # studies set aside as historical (skipped, never drafted)
    reports_stored: int = 0
    reports_duplicate: int = 0
    refused: Tally = field(default_factory=Tally)
    matched: int = 0  # the file's reports that count for a study now
    unmatched: int = 0  # the file's reports still waiting for their study

    @property
    def studies_settled(self) -> int:
        return len(self.settled)


@dataclass(frozen=True)
class _File:
    path: Path
    where: str  # the path inside the DICOM folder, for the summary
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def run_import(
    settings: Settings,
    sessions: sessionmaker[Session],
    reports: Path | None,
    dicom_dir: Path | None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import the archive (see the module docstring); raises UserError for an unusable input."""
    progress = progress or Progress(disable=True)
    rows = read_rows(reports) if reports is not None else []  # a bad file stops here, before any change
    files = list_files(dicom_dir) if dicom_dir is not None else []
    summary = ImportSummary()
    with _exclusive(settings.data_dir):
        summary.settled.update(resume(sessions))
        if dicom_dir is not None:
            studies = _scan(files, dicom_dir, summary, progress)
            _import_images(settings, sessions, studies, summary, progress)
        if rows:
            stored = _store_reports(sessions, rows, summary, progress)
            _match(sessions, stored, summary)
    return summary


def list_files(folder: Path) -> list[Path]:
    """Every file under `folder` in a stable order, hidden files and folders left out."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    found = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [Path(root) / name for name in sorted(names) if not name.startswith(".")]
    return found


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One import at a time per node: a second one is refused, not interleaved."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError("another echo-admin import is running on this node; wait for it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- images ----------------------------------------------------------------------------------------


def _scan(
    files: Sequence[Path], folder: Path, summary: ImportSummary, progress: Progress
) -> dict[str, list[_File]]:
    """The readable files by Study Instance UID (headers only); the others counted with the reason."""
    task = progress.add_task("reading DICOM headers", total=len(files))
    studies: dict[str, list[_File]] = {}
    for path in files:
        where = path.relative_to(folder).as_posix()
        try:
            header = dcmread(path, stop_before_pixels=True)
            meta = header.file_meta
            study_uid = str(header.get("StudyInstanceUID") or "").strip()
            entry = _File(
                path,
                where,
                str(meta.get("MediaStorageSOPClassUID") or header.get("SOPClassUID") or "").strip(),
                str(meta.get("MediaStorageSOPInstanceUID") or header.get("SOPInstanceUID") or "").strip(),
                str(meta.get("TransferSyntaxUID") or "").strip(),
            )
        except InvalidDicomError:
            summary.unreadable.add(where, "not a DICOM file")
        except OSError as error:
            summary.unreadable.add(where, f"cannot read ({error.strerror or type(error).__name__})")
        except Exception as error:  # pydicom raises many types for damaged input
            summary.unreadable.add(where, f"cannot decode ({type(error).__name__})")
        else:
            missing = [
                name
                for name, value in (
                    ("Study Instance UID", study_uid),
                    ("SOP Instance UID", entry.sop_instance_uid),
                    ("SOP Class UID", entry.sop_class_uid),
                    ("Transfer Syntax UID", entry.transfer_syntax_uid),
                )
                if not value
            ]
            if missing:
                summary.unreadable.add(where, f"no {missing[0]}")
            else:
                studies.setdefault(study_uid, []).append(entry)
        progress.advance(task)
    return studies


def _import_images(
    settings: Settings,
    sessions: sessionmaker[Session],
    studies: dict[str, list[_File]],
    summary: ImportSummary,
    progress: Progress,
) -> None:
    task = progress.add_task("storing images", total=sum(len(files) for files in studies.values()))
    ingestor = Ingestor(sessions, Spool(settings.spool_dir))
    association = open_association(sessions, settings)
    stored_before, failed_before = summary.files_stored, summary.unreadable.count
    outcome, reason = AssociationOutcome.ABORTED, "the import stopped before its end"
    touched: set[int] = set()
    try:
        for files in studies.values():
            already = _already_stored(sessions, [entry.sop_instance_uid for entry in files])
            for entry in files:
                if entry.sop_instance_uid in already:
                    summary.files_already += 1
                else:
                    study_id = _send(ingestor, entry, association, summary)
                    if study_id is not None:
                        touched.add(study_id)
                progress.advance(task)
            summary.settled.update(settle(sessions, sorted(touched)))
            touched.clear()
        outcome, reason = AssociationOutcome.RELEASED, None
    finally:
        summary.settled.update(settle(sessions, sorted(touched)))  # the study an error stopped in
        close_association(
            sessions,
            association,
            outcome,
            reason,
            summary.files_stored - stored_before,
            summary.unreadable.count - failed_before,
        )


def _send(ingestor: Ingestor, entry: _File, association: int, summary: ImportSummary) -> int | None:
    """Ingest one file as a C-STORE of it would; the study id, or None when it was turned away."""
    try:
        encoded = entry.path.read_bytes()
    except OSError as error:
        summary.unreadable.add(entry.where, f"cannot read ({error.strerror or type(error).__name__})")
        return None
    result = ingestor.store(
        ReceivedInstance(
            sop_class_uid=entry.sop_class_uid,
            sop_instance_uid=entry.sop_instance_uid,
            transfer_syntax_uid=entry.transfer_syntax_uid,
            encoded=encoded,
            association_id=association,
        )
    )
    if result.outcome in _FATAL:  # every later file would fail the same way
        raise UserError(f"import stopped: {result.detail}; fix it and run the import again (it resumes)")
    if not result.stored:
        summary.unreadable.add(entry.where, result.detail)
        return None
    summary.files_stored += 1
    return result.study_id


def _already_stored(sessions: sessionmaker[Session], sop_uids: list[str]) -> set[str]:
    """The SOP Instance UIDs among `sop_uids` the node holds with their spool file present."""
    with sessions() as session:
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.path).where(Instance.sop_instance_uid.in_(sop_uids))
        ).all()
    return {uid for uid, path in rows if not is_purged(path) and Path(path).is_file()}


# --- signed reports --------------------------------------------------------------------------------


def _store_reports(
    sessions: sessionmaker[Session], rows: list[ArchiveRow], summary: ImportSummary, progress: Progress
) -> list[int]:
    """Store every usable row (REPORT_BATCH per transaction); the ids of the file's reports."""
    task = progress.add_task("storing signed reports", total=len(rows))
    ids: list[int] = []
    for start in range(0, len(rows), REPORT_BATCH):
        batch = rows[start : start + REPORT_BATCH]
        with sessions.begin() as session:
            for row in batch:
                report_id = _store_row(session, row, summary)
                if report_id is not None:
                    ids.append(report_id)
        progress.advance(task, len(batch))
    return ids


def _store_row(session: Session, row: ArchiveRow, summary: ImportSummary) -> int | None:
    if row.problem is not None:
        summary.refused.add(row.where, row.problem)
        return None
    try:
        incoming = signed_from_row(row.values)
    except ValueError as error:
        summary.refused.add(row.where, str(error))
        return None
    before = session.scalar(
        select(SignedReport.id).where(
            SignedReport.source == SignedSource.IMPORT, SignedReport.message_key == incoming.message_key
        )
    )
    if before is not None:
        summary.reports_duplicate += 1
        return before
    current = current_for(session, incoming.accession_number, incoming.study_instance_uid)
    if current is not None and current.source is not SignedSource.IMPORT:
        summary.refused.add(row.where, "the RIS already sent a signed report for this order (kept)")
        return None
    try:
        with session.begin_nested():
            stored = store_signed(session, incoming)
    except SQLAlchemyError as error:  # str(error) would carry the row's values
        summary.refused.add(row.where, f"the database refused it ({type(error).__name__})")
        return None
    if stored.duplicate:
        summary.reports_duplicate += 1
    else:
        summary.reports_stored += 1
    return stored.row.id


def _match(sessions: sessionmaker[Session], ids: list[int], summary: ImportSummary) -> None:
    """Match what still waits for its study, then count the file's reports that count for one now."""
    batch = 500
    with sessions.begin() as session:
        while len(match_pending(session, limit=batch)) == batch:
            pass
    unique = sorted(set(ids))
    with sessions() as session:
        for start in range(0, len(unique), batch):
            matched, unmatched = _matched_counts(session, unique[start : start + batch])
            summary.matched += matched
            summary.unmatched += unmatched


def _matched_counts(session: Session, ids: list[int]) -> tuple[int, int]:
    rows = session.execute(
        select(SignedReport.study_id).where(SignedReport.id.in_(ids), SignedReport.replaced_by_id.is_(None))
    ).all()
    matched = sum(1 for (study_id,) in rows if study_id is not None)
    return matched, len(rows) - matched
