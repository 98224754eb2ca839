"""The SCP under abuse (issue 15 #9, #16): huge PDUs and instances, a full disk, idle sockets, floods.

Each test is a real association over a real socket: raw TCP for what no DICOM tool would send,
DCMTK's storescu (by full path: the venv's pynetdicom apps shadow it) and pynetdicom for statuses.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import select

from node.dicom.limits import read_exactly
from node.serve.runtime import Node
from node.store.models import Association, Instance
from node.store.states import AssociationOutcome

pytestmark = pytest.mark.integration

STORESCU = "/usr/bin/storescu"
AE_ARGS = ("-aet", "STORESCU", "-aec", "ECHO")


def rows(node: Node, model: type) -> list:
    assert node.database is not None
    with node.database.sessions() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def dcmtk_storescu(node: Node, *files: Path, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STORESCU, *AE_ARGS, "-to", "10", "127.0.0.1", str(node.settings.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def big_image(dicom, megabytes: float):
    """A CR image of about `megabytes` of 16-bit pixels."""
    side = int((megabytes * 1024 * 1024 / 2) ** 0.5)
    image = dicom.chest_image(size=side)
    image.PixelData = (np.arange(side * side, dtype=np.uint32) % 4096).astype(np.uint16).tobytes()
    return image


def closed_or_aborted_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the node sends before it closes the connection, or None if it is still open after `seconds`."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def idle_sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


# --- #9: what one PDU or one instance may take -----------------------------------------------------


@pytest.mark.parametrize("pdu_type", [0x01, 0x04], ids=["associate-rq", "p-data"])
def test_a_pdu_announcing_4_gb_ends_the_connection_at_once(start_node, make_settings, pdu_type: int) -> None:
    node = start_node(make_settings())
    with socket.create_connection(("127.0.0.1", node.settings.port), timeout=5) as sock:
        sock.sendall(struct.pack(">BBL", pdu_type, 0, 0xFFFFFFFF) + b"\x00" * 1024)
        started = time.monotonic()
        answer = closed_or_aborted_within(sock, 5.0)
    assert answer is not None, "the node kept reading a 4 GB PDU"
    assert time.monotonic() - started < 3
    assert answer == b"" or answer[0] == 0x07  # nothing more, or an A-ABORT


def test_a_4_gb_pdu_inside_an_association_aborts_it(scu, start_node, make_settings, wait_for) -> None:
    node = start_node(make_settings())
    association = scu.associate(node.settings)
    assert association.is_established
    association.dul.socket.socket.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF) + b"\x00" * 1024)
    wait_for(lambda: association.is_aborted or not association.is_alive(), 3.0, "the association aborted")
    [audit] = wait_for(lambda: [a for a in rows(node, Association) if a.ended_at], 5.0, "audit row closed")
    assert audit.outcome is AssociationOutcome.ABORTED


def test_an_instance_over_the_size_limit_is_refused_and_the_next_one_stored(
    scu, start_node, make_settings, dicom
) -> None:
    node = start_node(make_settings(max_instance_mb=1))
    [too_big, small] = scu.store(node.settings, big_image(dicom, 2.5), dicom.chest_image())
    assert too_big.Status == 0xC000
    assert too_big.ErrorComment == "larger than the node's 1 MB limit (ECHO_MAX_INSTANCE_MB)"
    assert small.Status == 0x0000
    assert len(rows(node, Instance)) == 1
    incoming = node.settings.spool_dir / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == []  # nothing of the big one is left


def test_a_large_instance_is_streamed_to_disk_not_held_in_memory(
    start_node, make_settings, dicom, tmp_path: Path
) -> None:
    node = start_node(make_settings())
    sent = dicom.save(big_image(dicom, 40), tmp_path / "big.dcm")
    tracemalloc.start()
    try:
        result = dcmtk_storescu(node, sent)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.returncode == 0, result.stderr
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MB held while receiving a 40 MB instance"
    [instance] = rows(node, Instance)
    assert instance.size == Path(instance.path).stat().st_size > 40_000_000
    assert dcmread(instance.path).PixelData == dcmread(sent).PixelData


def test_a_disk_below_the_free_space_floor_answers_out_of_resources(
    scu, start_node, make_settings, dicom
) -> None:
    node = start_node(make_settings(min_free_mb=10**9))  # more than any disk has: always "too full"
    association = scu.associate(node.settings)
    try:
        assert association.send_c_echo().Status == 0x0000  # the node still answers
        refused = association.send_c_store(dicom.chest_image())
    finally:
        association.release()
    assert refused.Status == 0xA700
    assert refused.ErrorComment.startswith("disk almost full: less than 1000000000 MB free")
    assert rows(node, Instance) == []
    assert not any(p.is_file() for p in node.settings.spool_dir.rglob("*"))


# --- #9 and #16: limits are checked before anything is written ----------------------------------------


def test_associations_beyond_the_limit_are_refused_before_any_row_is_written(
    scu, start_node, make_settings, wait_for
) -> None:
    node = start_node(make_settings(max_associations=1))
    first = scu.associate(node.settings)
    assert first.is_established
    try:
        for _ in range(5):
            refused = scu.associate(node.settings)
            assert refused.is_rejected
            rejection = refused.acceptor.primitive
            assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        first.release()
    [audit] = wait_for(lambda: [a for a in rows(node, Association) if a.ended_at], what="released")
    assert audit.outcome is AssociationOutcome.RELEASED
    assert len(rows(node, Association)) == 1  # the five refusals wrote nothing


def test_one_host_cannot_take_every_association(scu, start_node, make_settings) -> None:
    node = start_node(make_settings(max_associations=10, max_associations_per_host=2))
    held = [scu.associate(node.settings) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = scu.associate(node.settings)
        assert third.is_rejected
        assert third.acceptor.primitive.diagnostic == 0x02
    finally:
        for association in held:
            association.release()
    again = scu.associate(node.settings)
    assert again.is_established
    again.release()


# --- #16: idle sockets do not lock the door ---------------------------------------------------------


def test_idle_connections_do_not_keep_a_sender_out(
    start_node, make_settings, dicom, tmp_path: Path, idle_sockets: list[socket.socket]
) -> None:
    node = start_node(make_settings())
    for _ in range(30):
        idle_sockets.append(socket.create_connection(("127.0.0.1", node.settings.port), timeout=5))
    image = dicom.save(dicom.chest_image(), tmp_path / "one.dcm")
    started = time.monotonic()
    result = dcmtk_storescu(node, image)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 5
    assert len(rows(node, Instance)) == 1


def test_idle_connections_are_closed_after_the_handshake_timeout(
    start_node, make_settings, idle_sockets: list[socket.socket]
) -> None:
    node = start_node(make_settings(handshake_timeout_seconds=1))
    idle_sockets.append(socket.create_connection(("127.0.0.1", node.settings.port), timeout=5))
    assert closed_or_aborted_within(idle_sockets[0], 4.0) is not None


def test_with_tls_an_idle_connection_does_not_block_a_tls_echo(
    scu, start_node, make_settings, tls_files: tuple[Path, Path], idle_sockets: list[socket.socket]
) -> None:
    cert, key = tls_files
    node = start_node(make_settings(tls_cert=cert, tls_key=key))
    idle_sockets.append(socket.create_connection(("127.0.0.1", node.settings.port), timeout=5))
    time.sleep(0.3)  # the node has accepted it and would be waiting for its ClientHello
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    started = time.monotonic()
    association = scu.associate(node.settings, tls_args=(client, "127.0.0.1"))
    try:
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000
    finally:
        association.release()
    assert time.monotonic() - started < 5


class CountingSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.calls = sock, 0

    def recv_into(self, buffer: memoryview, nbytes: int) -> int:
        self.calls += 1
        return self.sock.recv_into(buffer, nbytes)


def test_a_pdu_body_is_read_in_large_reads_and_a_closed_peer_ends_it_short() -> None:
    left, right = socket.socketpair()
    with left, right:
        payload = os.urandom(512 * 1024)
        sender = threading.Thread(target=right.sendall, args=(payload,))
        sender.start()
        counting = CountingSocket(left)
        assert read_exactly(counting, len(payload)) == payload  # type: ignore[arg-type]
        sender.join(10)
        assert counting.calls < 512 // 4 // 4, counting.calls  # pynetdicom: one call per 4 KB
        right.sendall(b"abc")
        right.shutdown(socket.SHUT_WR)
        assert read_exactly(left, 10) == b"abc"
