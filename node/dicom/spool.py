"""Where received files live, and how they get there without ever being half-written.

Layout: ``<spool>/<study digest>/<series digest>/<SOP instance digest>.dcm`` (see `node.store.uids`).
A path depends only on the UIDs, so a re-sent instance lands on the same path and replaces the
old file in one rename: a reader sees the old file or the new one, never a mix or nothing.
Data sets still arriving are streamed to ``<spool>/.incoming/`` (see `node.dicom.incoming`) and
renamed into place with `Spool.move_into` once accepted.

Durability costs one fsync of the file per new instance (`settle`): the file is renamed into place
first and fsynced after. On the journaling file systems the node runs on (ext4, XFS, btrfs) a rename
updates the renamed file's ctime, so the file's fsync commits the journal transaction that holds the
rename and every folder created before it: data, name and folders survive a power cut together,
without a folder fsync each. A new file is unanswered until that fsync returns; if the power goes
before it, the start-up re-scan (`node.dicom.recover`) finds a file without a row and restores it,
or removes it if it is cut short. A file that replaces an earlier copy (a re-sent instance) is
fsynced before the rename too, so the earlier copy stays until the new one is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from node.store.uids import uid_digest

TEMP_PREFIX = ".incoming-"
TEMP_SUFFIX = ".part"
SPOOL_SUFFIX = ".dcm"
COPY_CHUNK_BYTES = 1 << 20


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        return (
            self.root
            / uid_digest(study_uid)
            / uid_digest(series_uid)
            / f"{uid_digest(sop_instance_uid)}{SPOOL_SUFFIX}"
        )

    def write(self, path: Path, data: bytes) -> None:
        """Write `data` to `path` atomically and durably (temp file beside it, then `settle`).

        Raises OSError (ENOSPC when the disk is full); then `path` is exactly as it was before.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        _replace_atomically(path, lambda handle: handle.write(data))

    def move_into(self, path: Path, source: Path) -> None:
        """Rename `source` (complete, on the spool's file system, not yet fsynced) to `path`, durably.

        Raises OSError; then `path` is exactly as it was before (`source` may be gone).
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            settle(source, path)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            self._copy_into(path, source)  # the spool's folders span file systems: copy, then rename
            source.unlink()

    def _copy_into(self, path: Path, source: Path) -> None:
        with source.open("rb") as original:
            _replace_atomically(path, lambda handle: shutil.copyfileobj(original, handle, COPY_CHUNK_BYTES))

    def stored_files(self, changed_since: float = 0.0) -> Iterator[tuple[Path, float]]:
        """(path, mtime) of every file renamed into place whose mtime is `changed_since` or later.

        A series folder's mtime moves whenever a file is renamed into it, so folders older than
        `changed_since` are not opened. Temp files and the incoming folder are left out.
        """
        if not self.root.is_dir():
            return
        for study in _folders(self.root):
            for series in _folders(study.path):
                if series.stat().st_mtime < changed_since:
                    continue
                with os.scandir(series.path) as entries:
                    for entry in entries:
                        if not entry.name.endswith(SPOOL_SUFFIX) or not entry.is_file(follow_symlinks=False):
                            continue
                        mtime = entry.stat().st_mtime
                        if mtime >= changed_since:
                            yield Path(entry.path), mtime

    def remove_stale_temp_files(self) -> int:
        """Delete temp files a killed process left behind (never answered as stored); returns how many."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for leftover in self.root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed += 1
        return removed


def _folders(parent: Path | str) -> Iterator[os.DirEntry[str]]:
    """The sub-folders of `parent` that hold stored files (dot-folders such as .incoming left out)."""
    with os.scandir(parent) as entries:
        folders = [e for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    yield from folders


def settle(source: Path, path: Path) -> None:
    """Rename `source` to `path` and make both durable with one fsync of the file (see the module).

    When `path` already holds a file (an earlier copy), `source` is fsynced before the rename, so a
    power cut leaves the earlier copy or the complete new one. If the fsync after the rename of a
    new file fails, the file is removed again: nothing unanswered stays behind under its name.
    """
    replacing = path.exists()
    if replacing:
        _fsync_file(source)
    os.replace(source, path)
    try:
        _fsync_file(path)
    except OSError:
        if not replacing:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """A temp file beside `path`, filled by `fill`, then settled over `path` (or removed)."""
    descriptor, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            fill(handle)
        settle(Path(temp_name), path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
