"""Where received files live, and how they get there without ever being half-written.

Layout: ``<spool>/<study digest>/<series digest>/<SOP instance digest>.dcm`` (see `node.store.uids`).
A path depends only on the UIDs, so a re-sent instance lands on the same path and replaces the
old file in one rename: a reader sees the old file or the new one, never a mix or nothing.
Data sets still arriving are streamed to ``<spool>/.incoming/`` (see `node.dicom.incoming`) and
renamed into place with `Spool.move_into` once accepted.

Durability costs one fsync of the file per new instance: `write` and `move_into` rename the file
into place and hand back a `Placed`, whose `sync` is that fsync (ingest runs it while the writer
writes the instance's rows, which commit only after it). On the journaling file systems the node
runs on (ext4, XFS, btrfs) a rename updates the renamed file's ctime, so the file's fsync commits the
journal transaction that holds the rename and every folder created before it: data, name and folders
survive a power cut together, without a folder fsync each. A new file is unanswered until that fsync
returns; if the power goes before it, the start-up re-scan (`node.dicom.recover`) finds a file
without a row and restores it, or removes it if it is cut short. A file that replaces an earlier copy
(a re-sent instance) is fsynced before the rename too, so the earlier copy stays until the new one is
complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

    def write(self, path: Path, data: bytes) -> Placed:
        """Write `data` to a temp file beside `path` and rename it into place; `sync` it next.

        Raises OSError (ENOSPC when the disk is full); then `path` is exactly as it was before.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        return _replace_atomically(path, lambda handle: handle.write(data))

    def move_into(self, path: Path, source: Path) -> Placed:
        """Rename `source` (complete, on the spool's file system, not yet fsynced) to `path`; `sync` it
        next.

        Raises OSError; then `path` is exactly as it was before and `source` is still there.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return rename_into(source, path)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
        placed = self._copy_into(path, source)  # the spool's folders span file systems: copy, then rename
        source.unlink()
        return placed

    def _copy_into(self, path: Path, source: Path) -> Placed:
        with source.open("rb") as original:
            return _replace_atomically(
                path, lambda handle: shutil.copyfileobj(original, handle, COPY_CHUNK_BYTES)
            )

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


@dataclass(frozen=True)
class Placed:
    """A file renamed into place; its one fsync (`sync`) is still to come (see the module)."""

    path: Path
    new: bool  # no earlier copy was replaced: removed again if its fsync fails

    def sync(self) -> None:
        """fsync the file: its data, its name and new folders become durable. If that fails for a new
        file, the file is removed again: nothing unanswered stays behind under its name."""
        try:
            _fsync_file(self.path)
        except OSError:
            if self.new:
                with contextlib.suppress(OSError):
                    self.path.unlink()
            raise


def rename_into(source: Path, path: Path) -> Placed:
    """Rename `source` to `path`. When `path` already holds a file (an earlier copy), `source` is
    fsynced first, so a power cut leaves the earlier copy or the complete new one."""
    replacing = path.exists()
    if replacing:
        _fsync_file(source)
    os.replace(source, path)
    return Placed(path, new=not replacing)


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace_atomically(path: Path, fill: Callable[[BinaryIO], object]) -> Placed:
    """A temp file beside `path`, filled by `fill`, then renamed over `path` (or removed)."""
    descriptor, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            fill(handle)
        return rename_into(Path(temp_name), path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
