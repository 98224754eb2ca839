"""Wake-ups for the embedded broker: a publisher tells the waiting consumers "a message is in".

kombu's SQL transport finds a new message by polling the database once a second, which is most of a
study's wait on the embedded node. Beside the broker's SQLite file lies a folder (mode 0700: only
the node's user can wake its consumers) with one datagram socket per waiting consumer; after a
publish commits, the publisher sends one byte to each. A consumer waits on its socket for at most
the polling interval, so a lost wake-up costs no more than the poll it replaces, and an idle node
polls no more often than before.

A wake-up is best-effort by design: the message is in the database before anyone is told, and the
poll still finds it. Sockets left by a process that died are removed by the next publisher
(sending to them is refused).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import socket
from pathlib import Path

log = logging.getLogger(__name__)

# sockaddr_un.sun_path holds 108 bytes on Linux, 104 on macOS (both with the closing NUL).
MAX_SOCKET_PATH = 103
SUFFIX = ".sock"


def wake_folder(database: Path) -> Path:
    """Where the wake-up sockets of the broker database `database` live."""
    return database.with_name(f"{database.name}-wake")


class WakeUps:
    """The wake-up folder of one broker database: `notify()` for publishers, `listener()` for consumers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sender: socket.socket | None = None

    def notify(self) -> int:
        """Wake every consumer waiting on this broker; how many were told."""
        try:
            entries = [entry.path for entry in os.scandir(self.folder) if entry.name.endswith(SUFFIX)]
        except FileNotFoundError:  # no consumer has waited yet
            return 0
        told = 0
        for path in entries:
            try:
                self._socket().sendto(b"\x01", path)
                told += 1
            except BlockingIOError:  # its queue of wake-ups is full: it will wake anyway
                told += 1
            except ConnectionRefusedError:  # nobody reads it: its process died
                with contextlib.suppress(OSError):
                    os.unlink(path)
            except OSError as error:  # gone meanwhile, or not a socket: the poll covers it
                log.debug("no wake-up sent to %s: %s", path, error)
        return told

    def listener(self) -> Listener | None:
        """A socket of our own to wait on; None (the consumer polls) when the folder cannot hold one."""
        path = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            log.warning(
                "broker wake-ups are off: the data folder's path is too long for a socket "
                "(%d bytes); new tasks are found by polling once a second",
                len(os.fsencode(path)),
            )
            return None
        try:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            return Listener(path)
        except OSError as error:
            log.warning("broker wake-ups are off (%s); new tasks are found by polling", error)
            return None

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def _socket(self) -> socket.socket:
        if self._sender is None:
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender.setblocking(False)
            self._sender = sender
        return self._sender


class Listener:
    """One consumer's wake-up socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.bind(str(path))
        except OSError:
            self._socket.close()
            raise
        self._socket.setblocking(False)

    def wait(self, timeout_s: float) -> bool:
        """Block until woken or `timeout_s` passed; True when woken (every pending wake-up is taken)."""
        readable, _, _ = select.select([self._socket], [], [], max(0.0, timeout_s))
        if not readable:
            return False
        with contextlib.suppress(BlockingIOError):
            while self._socket.recv(64):
                pass
        return True

    def close(self) -> None:
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
