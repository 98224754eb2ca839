"""At start, before the SCP listens, the database is made to agree with the spool: the spool is the
source of truth.

A C-STORE is answered success once its file is fsynced in the spool and its rows are committed; the
ingest writer commits SQLite without an fsync of its own (`node.dicom.writer`), so a power cut can
take the last commits while their files survive. `recover_spool`:

1. removes temp files a killed process left (data sets still arriving, files being written): nobody
   was told they were stored;
2. looks up every file renamed into the spool since a while before the newest committed instance
   (`RESCAN_MARGIN`): a file without a row, or whose row is older than the file (a re-sent instance
   whose update was lost), is recorded again as if it had just arrived (`Ingestor.restore`), and its
   study is assembled after the quiet period like any other;
3. removes such a file without a row that does not read as a complete instance: a new file the power
   cut caught before its fsync, never answered.

A file whose rows a database error refused (the sender was answered 0xA700) is restored too: the
instance is complete, and a re-send finds it stored.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from node.dicom.header import HeaderError, read_header_file
from node.dicom.ingest import Ingestor
from node.store.models import Instance

log = logging.getLogger(__name__)

# How long before the newest committed instance a file may have been written and still lack its row
# (an instance waiting for the writer while others committed): files older than that are not opened.
RESCAN_MARGIN = timedelta(minutes=10)
_LOOKUP_BATCH = 500


@dataclass
class Recovery:
    temp_files_removed: int = 0
    restored: int = 0  # files recorded again
    torn_removed: int = 0  # files without a row that were cut short
    failed: int = 0  # files that could not be recorded (database error): left for the next start

    def __bool__(self) -> bool:
        return bool(self.temp_files_removed or self.restored or self.torn_removed or self.failed)


def recover_spool(ingestor: Ingestor) -> Recovery:
    """Remove temp files, restore the rows of spool files that lack them (see the module)."""
    spool = ingestor.spool
    result = Recovery(temp_files_removed=spool.remove_stale_temp_files())
    since = _newest_row(ingestor)
    files = list(spool.stored_files((since - RESCAN_MARGIN).timestamp() if since else 0.0))
    for start in range(0, len(files), _LOOKUP_BATCH):
        chunk = files[start : start + _LOOKUP_BATCH]
        rows = _rows_by_path(ingestor, [str(path) for path, _ in chunk])
        for path, mtime in chunk:
            recorded_at = rows.get(str(path))
            if recorded_at is None or recorded_at.timestamp() < mtime:
                _restore(ingestor, path, recorded_at is not None, result)
    if result:
        log.warning(
            "spool re-scan: %d instances restored, %d files cut short and %d temp files removed, %d failed",
            result.restored,
            result.torn_removed,
            result.temp_files_removed,
            result.failed,
        )
    return result


def _newest_row(ingestor: Ingestor) -> datetime | None:
    with ingestor.sessions() as session:
        return session.scalar(select(func.max(Instance.received_at)))


def _rows_by_path(ingestor: Ingestor, paths: list[str]) -> dict[str, datetime]:
    with ingestor.sessions() as session:
        rows = session.execute(select(Instance.path, Instance.received_at).where(Instance.path.in_(paths)))
        return {path: received_at for path, received_at in rows}


def _restore(ingestor: Ingestor, path: Path, has_row: bool, result: Recovery) -> None:
    try:
        header = read_header_file(path)
    except HeaderError as error:
        if has_row:  # an answered instance damaged since: kept, assembly copes with unreadable files
            log.warning("spool re-scan: stored file %s unreadable (%s); kept", path.name, error.detail)
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        result.torn_removed += 1
        log.warning("spool re-scan: removed %s, never answered and cut short (%s)", path.name, error.detail)
        return
    if ingestor.restore(path, header).stored:
        result.restored += 1
    else:
        result.failed += 1
