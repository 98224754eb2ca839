"""Received data sets go to disk as they arrive, capped in size and by the free space left.

pynetdicom's ``_config.STORE_RECV_CHUNKED_DATASET`` makes it write each C-STORE data set to a
temporary Part 10 file, P-DATA by P-DATA, instead of collecting it in memory; the C-STORE handler
then gets the file as ``event.dataset_path``. pynetdicom opens that file with
``tempfile.NamedTemporaryFile`` in the system temp folder, with no limit. `install` replaces that one
name inside ``pynetdicom.dimse_messages``: for an association of an ECHO server (the reading thread
is its DUL, whose association's server has an `IncomingFiles`), the file is an `IncomingFile` in the
spool's own ``.incoming`` folder, so that

- a finished file is renamed into the spool (same file system) instead of copied;
- past ECHO_MAX_INSTANCE_MB it stops writing, empties the file and marks it refused, while the
  rest of the data set is read and dropped, so the sender still gets a C-STORE status;
- below ECHO_MIN_FREE_MB of free disk it writes nothing and is marked refused (0xA700), so the node
  answers out-of-resources before the disk is full;
- files of an association that ends mid-transfer are deleted (pynetdicom would leave them).

Any other thread (a pynetdicom SCP of some other code in the process) gets pynetdicom's own file.
The names follow `node.dicom.spool`'s temp pattern, so files a killed process left are removed at start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from pynetdicom import _config, dimse_messages

from node.dicom.spool import TEMP_PREFIX, TEMP_SUFFIX

log = logging.getLogger(__name__)

MB = 1024 * 1024
DISK_CHECK_EVERY_BYTES = 16 * MB  # look at the free space again after this much more data
INCOMING_FOLDER = ".incoming"

_original_named_temporary_file = dimse_messages.NamedTemporaryFile
_install_lock = threading.Lock()


class Refusal(StrEnum):
    TOO_LARGE = "too-large"
    DISK_LOW = "disk-low"
    WRITE_FAILED = "write-failed"  # the disk said no (full, quota, I/O error): `IncomingFile.error`


class IncomingFile:
    """A write-only file as pynetdicom uses it (``write``, ``file.flush()``, ``name``, ``close``)."""

    def __init__(
        self,
        owner: IncomingFiles,
        handle: BinaryIO,
        path: Path,
        assoc: object,
    ) -> None:
        self.owner = owner
        self.name = str(path)
        self.path = path
        self.assoc = assoc
        self.received = 0  # bytes pynetdicom handed over (file meta included)
        self.refusal: Refusal | None = None
        self.error: OSError | None = None
        self._handle: BinaryIO | None = handle
        self._next_disk_check = DISK_CHECK_EVERY_BYTES
        if owner.disk_low():
            self._refuse(Refusal.DISK_LOW)

    @property
    def file(self) -> IncomingFile:  # pynetdicom calls ``.file.flush()`` after every fragment
        return self

    def write(self, data: bytes) -> int:
        self.received += len(data)
        if self.refusal is None and self._handle is not None:
            if self.received > self.owner.max_bytes:
                self._refuse(Refusal.TOO_LARGE)
            elif self.received >= self._next_disk_check and self.owner.disk_low():
                self._refuse(Refusal.DISK_LOW)
            else:
                try:
                    self._handle.write(data)
                except OSError as error:
                    self._failed(error)
                if self.received >= self._next_disk_check:
                    self._next_disk_check = self.received + DISK_CHECK_EVERY_BYTES
        return len(data)

    def flush(self) -> None:
        if self._handle is not None and self.refusal is None:
            try:
                self._handle.flush()
            except OSError as error:
                self._failed(error)

    def finish(self) -> None:
        """All received: hand the bytes to the kernel and close the file. Its one fsync comes when
        it is renamed into the spool (`node.dicom.spool.Placed.sync`).

        A disk error marks the file refused (WRITE_FAILED) instead of raising.
        """
        if self._handle is not None and self.refusal is None:
            try:
                self._handle.flush()
            except OSError as error:
                self._failed(error)
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _failed(self, error: OSError) -> None:
        self.error = error
        self._refuse(Refusal.WRITE_FAILED)

    def _refuse(self, refusal: Refusal) -> None:
        """Keep nothing of this data set: free its disk now, drop what still arrives."""
        self.refusal = refusal
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()


class IncomingFiles:
    """The ``.incoming`` folder of one SCP, with its limits, and the files not yet handled."""

    def __init__(
        self,
        spool_root: Path,
        max_bytes: int,
        min_free_bytes: int,
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
    ) -> None:
        self.folder = spool_root / INCOMING_FOLDER
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.disk_usage = disk_usage
        self._files: dict[str, IncomingFile] = {}
        self._lock = threading.Lock()

    def disk_low(self) -> bool:
        try:
            return int(self.disk_usage(self.folder).free) < self.min_free_bytes
        except OSError:
            return False  # cannot tell: the write itself will say (ENOSPC -> out of resources)

    def open(self, assoc: object) -> IncomingFile:
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.folder)
        incoming = IncomingFile(self, os.fdopen(descriptor, "wb"), Path(name), assoc)
        with self._lock:
            self._files[incoming.name] = incoming
        return incoming

    def take(self, path: Path | str) -> IncomingFile | None:
        """The C-STORE handler claims its file; from now on it decides what happens to it."""
        with self._lock:
            return self._files.pop(str(path), None)

    def discard(self, assoc: object) -> int:
        """The association ended: delete the files of data sets it never finished sending."""
        with self._lock:
            left = [f for f in self._files.values() if f.assoc is assoc]
            for incoming in left:
                del self._files[incoming.name]
        for incoming in left:
            incoming.discard()
        return len(left)


def _named_temporary_file(*args: Any, **kwargs: Any) -> Any:
    """pynetdicom's NamedTemporaryFile, as seen from its DIMSE decoder (see the module's docstring)."""
    assoc = getattr(threading.current_thread(), "assoc", None)
    incoming = getattr(getattr(assoc, "_server", None), "incoming", None)
    if isinstance(incoming, IncomingFiles):
        return incoming.open(assoc)
    return _original_named_temporary_file(*args, **kwargs)


def install() -> None:
    """Receive C-STORE data sets to files (process-wide; idempotent)."""
    with _install_lock:
        _config.STORE_RECV_CHUNKED_DATASET = True
        dimse_messages.NamedTemporaryFile = _named_temporary_file  # type: ignore[assignment]
