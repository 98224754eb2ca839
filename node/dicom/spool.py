"""Where received files live, and how they get there without ever being half-written.

Layout: ``<spool>/<study digest>/<series digest>/<SOP instance digest>.dcm`` (see `node.store.uids`).
A path depends only on the UIDs, so a re-sent instance lands on the same path and replaces the
old file in one rename: a reader sees the old file or the new one, never a mix or nothing.
Data sets still arriving are streamed to ``<spool>/.incoming/`` (see `node.dicom.incoming`) and
renamed into place with `Spool.move_into` once accepted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from node.store.uids import uid_digest

TEMP_PREFIX = ".incoming-"
TEMP_SUFFIX = ".part"
COPY_CHUNK_BYTES = 1 << 20


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        return (
            self.root / uid_digest(study_uid) / uid_digest(series_uid) / f"{uid_digest(sop_instance_uid)}.dcm"
        )

    def write(self, path: Path, data: bytes) -> None:
        """Write `data` to `path` atomically and durably (temp file, fsync, rename, fsync folder).

        Raises OSError (ENOSPC when the disk is full); then `path` is exactly as it was before.
        """
        _make_directories(path.parent)
        _replace_atomically(path, lambda handle: handle.write(data))
        _fsync_directory(path.parent)

    def move_into(self, path: Path, source: Path) -> None:
        """Rename `source` (complete and fsynced, on the spool's file system) to `path`, durably.

        Raises OSError; then `path` is exactly as it was before and `source` is still there.
        """
        _make_directories(path.parent)
        try:
            os.replace(source, path)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            self._copy_into(path, source)  # the spool's folders span file systems: copy, then rename
            source.unlink()
        _fsync_directory(path.parent)

    def _copy_into(self, path: Path, source: Path) -> None:
        with source.open("rb") as original:
            _replace_atomically(path, lambda handle: shutil.copyfileobj(original, handle, COPY_CHUNK_BYTES))

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


def _make_directories(directory: Path) -> None:
    """mkdir -p, syncing each parent that gained an entry so the new folders survive a power cut."""
    if directory.is_dir():
        return
    _make_directories(directory.parent)
    with contextlib.suppress(FileExistsError):  # another association made it first
        directory.mkdir()
        _fsync_directory(directory.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable: without this a power cut can forget the new directory entry."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """A temp file beside `path`, filled by `fill`, fsynced, then renamed over `path` (or removed)."""
    descriptor, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
