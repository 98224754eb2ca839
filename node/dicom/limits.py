"""What one peer may take from the SCP: sockets, associations, PDU sizes. Kept in memory, checked before
anything is written to the database, so a flood costs the node no rows and no disk.

- `ConnectionTable`: every open TCP connection, *pending* (no A-ASSOCIATE-RQ yet: a TLS handshake
  or an idle socket) or *admitted* (an association the node accepted). Pending connections are
  capped per host and in all; the oldest pending one makes room for a new one, so idle sockets
  cannot keep a sender out. Admitted associations are capped in all (ECHO_MAX_ASSOCIATIONS) and
  per host (ECHO_MAX_ASSOCIATIONS_PER_HOST).
- `PduLengthGuard`: a PDU that announces more bytes than the node accepts ends the connection at
  once, instead of the node reading (or waiting for) gigabytes.
- `HostRate`: at most so many events per host and minute (audit rows of refused callers, log lines).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pynetdicom.pdu import A_ABORT_RQ

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

# PDU types (PS3.8 9.3): what the length of each may be, at most.
ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
MAX_ASSOCIATE_RQ_BYTES = 1 << 20  # 128 presentation contexts with many transfer syntaxes fit easily
MAX_OTHER_PDU_BYTES = 1 << 16  # release, abort, and what an acceptor never expects (AC, RJ)
# A connection may stay idle this long before a newer one may close it to make room.
IDLE_GRACE_S = 1.0
# Some senders count the 6-byte PDU header in the Maximum Length they were given; tolerate that.
P_DATA_TOLERANCE_BYTES = 1024


def _abort_invalid_pdu() -> bytes:
    """A-ABORT: source 2 (service provider), reason 6 (invalid PDU parameter value)."""
    pdu = A_ABORT_RQ()
    pdu.source = 0x02
    pdu.reason_diagnostic = 0x06
    return bytes(pdu.encode())


_ABORT_INVALID_PDU = _abort_invalid_pdu()


def pdu_length_limit(pdu_type: int, maximum_pdu_size: int) -> int:
    """The most bytes a PDU of `pdu_type` may announce when the node advertised `maximum_pdu_size`."""
    if pdu_type == P_DATA_TF:
        return maximum_pdu_size + P_DATA_TOLERANCE_BYTES if maximum_pdu_size else MAX_ASSOCIATE_RQ_BYTES
    if pdu_type == ASSOCIATE_RQ:
        return MAX_ASSOCIATE_RQ_BYTES
    return MAX_OTHER_PDU_BYTES


class PduLengthGuard:
    """Stands in for `AssociationSocket.recv` of one connection.

    pynetdicom reads a PDU as recv(6) for the header, then recv(length) for the rest, and reads the
    whole announced length into memory, blocking until it arrives. This guard looks at each header:
    a length over the limit sends an A-ABORT, shuts the socket and hands pynetdicom an empty header,
    which it treats as a closed connection (the association ends as aborted). The body it reads itself
    (`read_exactly`): pynetdicom would read it 4 KB per system call, 128 calls for a 512 KB image, each
    letting go of the interpreter lock and taking it back.
    """

    def __init__(self, sock: AssociationSocket, maximum_pdu_size: int, host: str, rate: HostRate) -> None:
        self._socket = sock
        self._recv = sock.recv
        self._maximum_pdu_size = maximum_pdu_size
        self._host = host
        self._rate = rate
        self._header_next = True
        self.refused = False

    def __call__(self, nr_bytes: int) -> bytearray:
        if self.refused:
            return bytearray()
        if not self._header_next:
            self._header_next = True
            raw = self._socket.socket
            if isinstance(raw, socket.socket):  # TLS sockets too; None once closed
                return read_exactly(raw, nr_bytes)
            return self._recv(nr_bytes)
        header = self._recv(nr_bytes)
        if len(header) != 6:
            return header  # pynetdicom: transport closed
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in KNOWN_PDU_TYPES:
            return header  # pynetdicom: invalid PDU, A-ABORT; it reads no body
        if length > pdu_length_limit(pdu_type, self._maximum_pdu_size):
            self._refuse(pdu_type, length)
            return bytearray()
        self._header_next = False
        return header

    def _refuse(self, pdu_type: int, length: int) -> None:
        self.refused = True
        if self._rate.allow(("pdu", self._host)):
            log.warning(
                "connection from %s aborted: PDU type 0x%02X announces %d bytes, over the limit of %d",
                self._host,
                pdu_type,
                length,
                pdu_length_limit(pdu_type, self._maximum_pdu_size),
            )
        raw = self._socket.socket
        if raw is None:
            return
        with contextlib.suppress(OSError, ValueError):
            raw.sendall(_ABORT_INVALID_PDU)
        with contextlib.suppress(OSError, ValueError):
            raw.shutdown(socket.SHUT_RDWR)


def read_exactly(sock: socket.socket, nr_bytes: int) -> bytearray:
    """`nr_bytes` from `sock` into one buffer, in as few calls as the socket allows; fewer if the peer
    closed the connection first (as pynetdicom's own recv). Socket errors and timeouts propagate."""
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    received = 0
    while received < nr_bytes:
        count = sock.recv_into(view[received:], nr_bytes - received)
        if count == 0:
            del view
            del buffer[received:]
            return buffer
        received += count
    return buffer


class HostRate:
    """At most `per_minute` events per key in any 60 s; the rest are counted for the next report."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._times: dict[object, deque[float]] = {}
        self._suppressed: dict[object, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: object) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._times) > 10_000:  # many hosts: forget the quiet ones
                self._times = {k: v for k, v in self._times.items() if v and now - v[-1] < 60}
            times = self._times.setdefault(key, deque())
            while times and now - times[0] >= 60:
                times.popleft()
            if len(times) >= self.per_minute:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            times.append(now)
            return True

    def suppressed(self, key: object) -> int:
        """How many were refused since the last call (and reset the count)."""
        with self._lock:
            return self._suppressed.pop(key, 0)


@dataclass(eq=False)
class Connection:
    host: str
    port: int
    sock: socket.socket | None
    opened_at: float
    admitted: bool = False
    assoc: Association | None = None

    def alive(self) -> bool:
        if self.sock is not None and self.sock.fileno() == -1:
            return False
        assoc = self.assoc
        return assoc is None or assoc.ident is None or assoc.is_alive()  # not started yet counts as alive

    def close(self) -> None:
        """End a connection that has not asked for an association (never an admitted one)."""
        if self.sock is not None:
            with contextlib.suppress(OSError, ValueError):
                self.sock.shutdown(socket.SHUT_RDWR)
        if self.assoc is not None:
            self.assoc.dul.kill_dul()  # its DUL thread stops; the association thread ends at its ACSE timeout


class ConnectionTable:
    """The open connections and the admitted associations, by (host, port) of the peer."""

    def __init__(
        self,
        max_associations: int,
        max_per_host: int,
        max_pending: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_associations = max_associations
        self.max_per_host = max_per_host
        self.max_pending = max_pending
        self.clock = clock
        self._open: dict[tuple[str, int], Connection] = {}
        self._lock = threading.Lock()
        self._log_rate = HostRate(per_minute=1)

    # ---- the accept thread ----------------------------------------------------------------------

    def opened(self, sock: socket.socket, host: str, port: int) -> bool:
        """A new TCP connection: make room among the pending ones, then record it; False: refuse it.

        Over the per-host cap, the host's own oldest pending connection is closed (a host cannot
        use more associations than that anyway). Over the total, the oldest pending connection of
        any host is closed, but only one that has waited `IDLE_GRACE_S`: a sender asks for its
        association within milliseconds, so another host's burst is never cut while idle sockets
        make way. Past twice the total, new connections are refused until pending ones are answered
        or time out (ECHO_HANDSHAKE_TIMEOUT_SECONDS).
        """
        evicted: list[Connection] = []
        with self._lock:
            self._prune()
            now = self.clock()
            pending = sorted((c for c in self._open.values() if not c.admitted), key=lambda c: c.opened_at)
            same_host = [c for c in pending if c.host == host]
            if len(same_host) >= self.max_per_host:
                evicted += same_host[: len(same_host) - self.max_per_host + 1]
            left = [c for c in pending if c not in evicted]
            if len(left) >= self.max_pending:
                evicted += [c for c in left if now - c.opened_at >= IDLE_GRACE_S][:1]
            refused = len(pending) - len(evicted) >= 2 * self.max_pending
            if not refused:
                self._open[(host, port)] = Connection(host, port, sock, now)
            for connection in evicted:
                self._open.pop((connection.host, connection.port), None)
        if refused and self._log_rate.allow(("refused", host)):
            log.warning("refused a connection from %s: too many connections wait for an association", host)
        for connection in evicted:
            connection.close()
            if self._log_rate.allow(connection.host):
                log.warning(
                    "closed an idle connection from %s that sent no association request "
                    "(pending connections at their limit)",
                    connection.host,
                )
        return not refused

    # ---- the connection's own threads -----------------------------------------------------------

    def use_socket(self, host: str, port: int, sock: socket.socket) -> None:
        """The connection is now read through `sock` (the TLS socket wrapping the accepted one)."""
        with self._lock:
            connection = self._open.get((host, port))
            if connection is not None:
                connection.sock = sock

    def attach(self, host: str, port: int, assoc: Association) -> None:
        with self._lock:
            connection = self._open.get((host, port))
            if connection is not None:
                connection.assoc = assoc

    def admit(self, host: str, port: int, assoc: Association) -> str | None:
        """An A-ASSOCIATE-RQ arrived: take an association slot, or say why there is none."""
        with self._lock:
            self._prune()
            connection = self._open.pop((host, port), None) or Connection(host, port, None, self.clock())
            admitted = [c for c in self._open.values() if c.admitted]
            if len(admitted) >= self.max_associations:
                return f"local limit of {self.max_associations} concurrent associations reached"
            if sum(c.host == host for c in admitted) >= self.max_per_host:
                return f"limit of {self.max_per_host} concurrent associations per host reached"
            connection.admitted = True
            connection.assoc = assoc
            self._open[(host, port)] = connection
            return None

    def forget(self, host: str, port: int) -> None:
        """The connection closed, or its association was refused or ended."""
        with self._lock:
            self._open.pop((host, port), None)

    def forget_socket(self, sock: object) -> None:
        with self._lock:
            for key, connection in list(self._open.items()):
                if connection.sock is sock:
                    del self._open[key]

    def counts(self) -> tuple[int, int]:
        """(pending, admitted), for tests and the status page."""
        with self._lock:
            self._prune()
            admitted = sum(c.admitted for c in self._open.values())
            return len(self._open) - admitted, admitted

    def _prune(self) -> None:
        for key in [key for key, connection in self._open.items() if not connection.alive()]:
            del self._open[key]
