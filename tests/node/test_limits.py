"""The connection table's rules, with a clock and sockets of our own (no network)."""

from __future__ import annotations

import struct

from node.dicom.limits import IDLE_GRACE_S, ConnectionTable, HostRate, PduLengthGuard, pdu_length_limit


class FakeSocket:
    def __init__(self) -> None:
        self.closed = False
        self.sent = b""

    def fileno(self) -> int:
        return -1 if self.closed else 3

    def shutdown(self, how: int) -> None:
        self.closed = True

    def sendall(self, data: bytes) -> None:
        self.sent += data


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_host_over_its_cap_loses_its_own_oldest_idle_connection() -> None:
    clock = Clock()
    table = ConnectionTable(max_associations=10, max_per_host=3, max_pending=20, clock=clock)
    idle = [FakeSocket() for _ in range(3)]
    for port, sock in enumerate(idle):
        assert table.opened(sock, "10.0.0.9", port)
    other = FakeSocket()
    assert table.opened(other, "10.0.0.1", 1)
    assert table.opened(FakeSocket(), "10.0.0.9", 99)  # the newest from that host gets in
    assert [s.closed for s in idle] == [True, False, False]
    assert not other.closed
    assert table.counts() == (4, 0)


def test_over_the_total_only_connections_idle_past_the_grace_make_way() -> None:
    clock = Clock()
    table = ConnectionTable(max_associations=10, max_per_host=10, max_pending=4, clock=clock)
    burst = [FakeSocket() for _ in range(8)]
    for index, sock in enumerate(burst):  # eight hosts at once: a burst is never cut
        assert table.opened(sock, f"10.0.1.{index}", 1)
    assert not any(s.closed for s in burst)
    assert not table.opened(FakeSocket(), "10.0.2.1", 1)  # twice the total: refused
    clock.now += IDLE_GRACE_S
    assert table.opened(FakeSocket(), "10.0.2.1", 1)  # now the oldest idle one makes way
    assert [s.closed for s in burst] == [True] + [False] * 7


def test_associations_are_capped_in_all_and_per_host_and_freed_when_they_end() -> None:
    table = ConnectionTable(max_associations=3, max_per_host=2, max_pending=10, clock=Clock())
    assert table.admit("10.0.0.1", 1, None) is None  # type: ignore[arg-type]
    assert table.admit("10.0.0.1", 2, None) is None  # type: ignore[arg-type]
    assert table.admit("10.0.0.1", 3, None) == "limit of 2 concurrent associations per host reached"  # type: ignore[arg-type]
    assert table.admit("10.0.0.2", 1, None) is None  # type: ignore[arg-type]
    assert table.admit("10.0.0.3", 1, None) == "local limit of 3 concurrent associations reached"  # type: ignore[arg-type]
    table.forget("10.0.0.1", 1)
    assert table.admit("10.0.0.3", 1, None) is None  # type: ignore[arg-type]


class FakeAssociationSocket:
    def __init__(self, stream: bytes) -> None:
        self.socket = FakeSocket()
        self._stream = stream

    def recv(self, nr_bytes: int) -> bytearray:
        data, self._stream = self._stream[:nr_bytes], self._stream[nr_bytes:]
        return bytearray(data)


def test_the_pdu_guard_passes_pdus_within_the_limit_and_ends_a_huge_one() -> None:
    body = b"\x01" * 100
    stream = (
        struct.pack(">BBL", 0x04, 0, len(body)) + body + struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\0" * 8
    )
    sock = FakeAssociationSocket(stream)
    guard = PduLengthGuard(sock, 16384, "10.0.0.1", HostRate(1))  # type: ignore[arg-type]
    assert guard(6) == stream[:6]
    assert guard(100) == body
    assert guard(6) == bytearray()  # pynetdicom reads this as a closed connection
    assert guard.refused and sock.socket.closed
    assert sock.socket.sent[0] == 0x07  # an A-ABORT went out first
    assert guard(6) == bytearray()


def test_pdu_limits() -> None:
    assert pdu_length_limit(0x04, 131072) == 131072 + 1024
    assert pdu_length_limit(0x01, 131072) == 1 << 20
    assert pdu_length_limit(0x05, 131072) == 1 << 16
