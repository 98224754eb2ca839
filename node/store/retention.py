"""Retention of received images: the spool files of finished studies are removed after a while.

A study is finished when it is delivered, skipped or failed; its files are removed once the study
has not changed for the retention period (ECHO_RETENTION_DAYS; unset keeps everything forever, the
site decides). The image a report was drafted from (reports.instance_id) is what retraining pairs
with the signed report, so it is kept while ECHO_RETENTION_KEEP_REPORTED is true (the default); so
is every image of a study that has a signed report (`echo-admin dataset export` reads them).

The rows stay: what was removed is recorded in the row itself, ``instances.path`` becoming
``purged:<UTC time>`` (the column is NOT NULL; no migration needed), so `echo-admin study ID`
and the audit still show every instance that was received, and a purge never counts a file twice.
The file goes first and the row after, in one transaction per study with the study row locked, so
a crash leaves at worst a row pointing at a missing file (the next purge marks it), never an
unrecorded file of patient data.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.config.settings import Settings
from node.store.models import Instance, Report, SignedReport, Study, utcnow
from node.store.states import StudyState

log = logging.getLogger(__name__)

FINISHED_STATES = (StudyState.DELIVERED, StudyState.SKIPPED, StudyState.FAILED)
PURGED_PREFIX = "purged:"
RETENTION_INTERVAL_S = 3600.0  # how often the node applies ECHO_RETENTION_DAYS


def is_purged(path: str) -> bool:
    return path.startswith(PURGED_PREFIX)


def purged_marker(at: datetime) -> str:
    return f"{PURGED_PREFIX}{at:%Y-%m-%dT%H:%M:%SZ}"


@dataclass
class PurgeResult:
    studies: int = 0  # studies whose files were (or would be) removed
    files: int = 0  # files removed (or that would be)
    bytes: int = 0
    missing: int = 0  # rows whose file was already gone: marked as purged all the same
    kept_reported: int = 0  # images kept because a report was drafted from them
    kept_signed: int = 0  # images kept because their study has a signed report (retraining)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        line = (
            f"{verb} {self.files} {'file' if self.files == 1 else 'files'} "
            f"({self.bytes / 1024 / 1024:.1f} MB) of {self.studies} finished "
            f"{'study' if self.studies == 1 else 'studies'}"
        )
        if self.missing:
            line += f"; {self.missing} already gone"
        if self.kept_reported:
            line += (
                f"; kept {self.kept_reported} drafted-from {'image' if self.kept_reported == 1 else 'images'}"
            )
        if self.kept_signed:
            line += f"; kept {self.kept_signed} {'image' if self.kept_signed == 1 else 'images'} of signed studies"
        return line


def purge(
    sessions: sessionmaker[Session],
    older_than: timedelta,
    *,
    keep_reported: bool = True,
    now: datetime | None = None,
    dry_run: bool = False,
) -> PurgeResult:
    """Remove the spool files of finished studies unchanged for `older_than` (see the module's docstring)."""
    now = now or utcnow()
    cutoff = now - older_than
    result = PurgeResult(dry_run=dry_run)
    with sessions() as session:
        study_ids = list(
            session.scalars(
                select(Study.id)
                .where(Study.state.in_(FINISHED_STATES), Study.updated_at < cutoff)
                .where(
                    select(Instance.id)
                    .where(Instance.study_id == Study.id, Instance.path.not_like(f"{PURGED_PREFIX}%"))
                    .exists()
                )
                .order_by(Study.id)
            )
        )
    for study_id in study_ids:
        with sessions.begin() as session:
            _purge_study(session, study_id, cutoff, keep_reported, now, dry_run, result)
    if result.files or result.missing:
        log.info("retention: %s", result.summary())
    return result


def _purge_study(
    session: Session,
    study_id: int,
    cutoff: datetime,
    keep_reported: bool,
    now: datetime,
    dry_run: bool,
    result: PurgeResult,
) -> None:
    study = session.get(Study, study_id, with_for_update=True)
    # Looked at again under the lock: a late instance or an operator may have moved it meanwhile.
    if study is None or study.state not in FINISHED_STATES or study.updated_at >= cutoff:
        return
    reported = set(
        session.scalars(
            select(Report.instance_id).where(Report.study_id == study_id, Report.instance_id.is_not(None))
        )
    )
    instances = session.scalars(
        select(Instance).where(Instance.study_id == study_id, Instance.path.not_like(f"{PURGED_PREFIX}%"))
    ).all()
    if keep_reported and session.scalar(
        select(SignedReport.id).where(SignedReport.study_id == study_id).limit(1)
    ):
        result.kept_signed += len(instances)
        return
    touched = False
    for instance in instances:
        if keep_reported and instance.id in reported:
            result.kept_reported += 1
            continue
        path = Path(instance.path)
        try:
            size: int | None = path.stat().st_size
        except FileNotFoundError:
            size = None
        if size is None:
            result.missing += 1
        elif _remove(path, dry_run):
            result.files += 1
            result.bytes += size
        else:
            continue  # could not be removed: the row keeps its path, the next run tries again
        touched = True
        if not dry_run:
            instance.path = purged_marker(now)
    if touched:
        result.studies += 1


def _remove(path: Path, dry_run: bool) -> bool:
    """Remove `path` (and its series and study folders once empty); False if it could not be removed."""
    if dry_run:
        return True
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.error("retention: cannot remove a spool file: %s", error.strerror or type(error).__name__)
        return False
    for folder in (path.parent, path.parent.parent):  # <study>/<series>/<instance>.dcm
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return True


def retention_tick(settings: Settings, sessions: sessionmaker[Session]) -> Callable[[], PurgeResult] | None:
    """What the node runs every RETENTION_INTERVAL_S, or None when ECHO_RETENTION_DAYS is unset."""
    if settings.retention_days is None:
        return None
    older_than = timedelta(days=settings.retention_days)
    keep_reported = settings.retention_keep_reported

    def tick() -> PurgeResult:
        return purge(sessions, older_than, keep_reported=keep_reported)

    return tick
