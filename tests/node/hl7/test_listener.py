"""The listener over real sockets: AA and stored, duplicates, refusals, the database down, TLS, garbage."""

from __future__ import annotations

import os
import socket
import time

import psycopg
import pytest
from sqlalchemy import make_url, select

from exporters.mllp import frame
from exporters.outcome import SendStatus
from node.store.models import SignedReport
from tests.node.hl7.ris import MllpConnection, NoAck, send_message, send_signed_report, signed_oru

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
UID = "1.2.826.0.1.3680043.8.498.99"


def report(control_id: str = "M1", **overrides: object) -> dict:
    values: dict = {
        "accession": "ACC1",
        "study_uid": UID,
        "findings": "Heart size is normal.",
        "impression": "No acute disease.",
        "control_id": control_id,
        "facility": "RADRIS",
    }
    return {**values, **overrides}


def rows(database, facility: str = "RADRIS", control_id: str | None = None) -> list[SignedReport]:
    query = select(SignedReport).where(SignedReport.sending_facility == facility)
    if control_id is not None:
        query = query.where(SignedReport.message_key == f"{facility}|{control_id}")
    with database.sessions() as session:
        return list(session.scalars(query.order_by(SignedReport.id)))


def test_a_signed_report_is_committed_then_answered_aa(sqlite_db, start_listener):
    listener = start_listener(sqlite_db)
    assert send_signed_report("127.0.0.1", listener.port, **report()) == "AA"
    [row] = rows(sqlite_db)
    assert (row.accession_number, row.study_instance_uid, row.result_status) == ("ACC1", UID, "F")
    assert row.findings == "Heart size is normal." and row.impression == "No acute disease."
    assert row.message_key == "RADRIS|M1" and row.message_type == "ORU^R01" and row.raw.startswith("MSH|")


def test_a_message_sent_again_is_answered_aa_and_stored_once(sqlite_db, start_listener):
    listener = start_listener(sqlite_db)
    for _ in range(3):  # the RIS lost our ACK and resends
        assert send_signed_report("127.0.0.1", listener.port, **report()) == "AA"
    assert len(rows(sqlite_db)) == 1
    assert send_signed_report("127.0.0.1", listener.port, **report("M2", status="C")) == "AA"
    first, correction = rows(sqlite_db)
    assert first.replaced_by_id == correction.id and correction.result_status == "C"


def test_a_facility_not_allowed_is_refused_ar_and_nothing_is_stored(sqlite_db, start_listener):
    listener = start_listener(sqlite_db, facilities=("RADRIS",))
    outcome = send_message("127.0.0.1", listener.port, signed_oru(**report(facility="OTHERRIS")))
    assert outcome.ack_code == "AR" and outcome.status is SendStatus.FAILED
    assert "sending facility 'OTHERRIS' (MSH-4) is not allowed" in outcome.error
    assert rows(sqlite_db, "OTHERRIS") == []
    assert send_signed_report("127.0.0.1", listener.port, **report()) == "AA"


def test_a_bad_report_is_answered_ar_with_its_reason(sqlite_db, start_listener):
    listener = start_listener(sqlite_db)
    outcome = send_message("127.0.0.1", listener.port, signed_oru(**report(status="P")))
    assert outcome.ack_code == "AR" and "result status P (OBR-25) is not final" in outcome.ack_text
    assert rows(sqlite_db) == []


def _allow_connections(database_name: str, allowed: bool) -> None:
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database_name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database_name,)
            )


@pytest.mark.integration
def test_with_the_database_down_the_answer_is_ae_and_the_resend_is_stored(pg_database, start_listener):
    listener = start_listener(pg_database)
    name = make_url(str(pg_database.engine.url)).database
    message = signed_oru(**report("DOWN1", facility="PGDOWN"))
    _allow_connections(name, False)
    try:
        outcome = send_message("127.0.0.1", listener.port, message)
    finally:
        _allow_connections(name, True)
    assert outcome.ack_code == "AE" and outcome.status is SendStatus.RETRY
    assert (
        "cannot store the report now (database error: OperationalError); send it again later" in outcome.error
    )
    assert rows(pg_database, "PGDOWN") == []
    assert send_message("127.0.0.1", listener.port, message).ack_code == "AA"  # the RIS retries
    assert send_message("127.0.0.1", listener.port, message).ack_code == "AA"
    assert len(rows(pg_database, "PGDOWN")) == 1


def test_tls_round_trip_and_a_plain_client_at_the_tls_port(sqlite_db, start_listener, certificate, wait_for):
    listener = start_listener(sqlite_db, tls=certificate.server())
    code = send_signed_report("127.0.0.1", listener.port, **report(), tls=certificate.client())
    assert code == "AA" and len(rows(sqlite_db)) == 1
    with pytest.raises(NoAck):  # plain MLLP to a TLS port: the handshake fails, the connection ends
        send_signed_report("127.0.0.1", listener.port, **report("PLAIN"))
    assert send_signed_report("127.0.0.1", listener.port, **report("M3"), tls=certificate.client()) == "AA"
    wait_for(lambda: len(listener.connections) == 0, 5, "every connection forgotten once closed")


def test_garbage_around_and_between_frames_is_dropped_and_the_connection_goes_on(sqlite_db, start_listener):
    listener = start_listener(sqlite_db)
    noise = bytes(byte for byte in os.urandom(20000) if byte not in (0x0B, 0x1C))
    with MllpConnection("127.0.0.1", listener.port) as connection:
        connection.send_raw(noise + b"\x1c\r")  # bytes outside any frame
        assert connection.send(signed_oru(**report("G1"))).ack_code == "AA"
        connection.send_raw(
            b"\x0bMSH|^~\\&|RISAPP|RADRIS|ECHO|ECHO|2025||ORU^R01|CUT|P|2.5.1\rPID|1"
        )  # cut short
        assert connection.send(signed_oru(**report("G2"))).ack_code == "AA"
        connection.send_raw(frame(b"hello, not HL7"))
        not_hl7 = connection.read_ack()
        assert b"MSA|AE||not an HL7 message: no MSH segment" in not_hl7
        connection.send_raw(frame(noise[:5000]))
        assert b"MSA|AE|" in connection.read_ack()
        assert connection.send(signed_oru(**report("G3"))).ack_code == "AA"
    assert [row.message_key for row in rows(sqlite_db)] == ["RADRIS|G1", "RADRIS|G2", "RADRIS|G3"]


def test_an_oversized_message_is_answered_ar_and_the_connection_goes_on(sqlite_db, start_listener):
    listener = start_listener(sqlite_db, max_message_bytes=4096)
    huge = signed_oru(**report("BIG", findings="Heart size is normal.\n" * 400))
    with MllpConnection("127.0.0.1", listener.port) as connection:
        outcome = connection.send(huge)
        assert outcome.ack_code == "AR" and "longer than 4096 bytes" in outcome.ack_text
        assert connection.send(signed_oru(**report("SMALL"))).ack_code == "AA"
    assert [row.message_key for row in rows(sqlite_db)] == ["RADRIS|SMALL"]


def test_messages_on_one_connection_are_answered_in_order(sqlite_db, start_listener):
    listener = start_listener(sqlite_db)
    messages = [signed_oru(**report(f"SEQ{n}", accession=f"A{n}")) for n in range(20)]
    with MllpConnection("127.0.0.1", listener.port) as connection:
        connection.send_raw(b"".join(frame(message) for message in messages))  # one write, many frames
        answers = [connection.read_ack() for _ in messages]
    assert [answer.split(b"\r")[1] for answer in answers] == [f"MSA|AA|SEQ{n}".encode() for n in range(20)]
    assert len(rows(sqlite_db)) == 20


def _closed_by_peer(sock: socket.socket, timeout_s: float) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_a_message_left_unfinished_is_dropped_after_the_read_timeout(sqlite_db, start_listener):
    listener = start_listener(sqlite_db, read_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", listener.port)) as sock:
        sock.sendall(b"\x0b" + signed_oru(**report())[:200])
        started = time.monotonic()
        assert _closed_by_peer(sock, 5.0)
        assert 0.4 < time.monotonic() - started < 3.0
    assert rows(sqlite_db) == []


def test_at_the_connection_limit_an_idle_connection_makes_room_a_busy_one_does_not(
    sqlite_db, start_listener, wait_for
):
    listener = start_listener(sqlite_db, max_connections=1)
    message = signed_oru(**report("C1"))
    first = MllpConnection("127.0.0.1", listener.port)
    first.send_raw(b"\x0b" + message[:100])  # a message arriving: its connection is never closed for room
    wait_for(
        lambda: [c.active for c in listener.connections._open.values()] == [True], 5, "a busy connection"
    )
    with socket.create_connection(("127.0.0.1", listener.port)) as refused:
        refused.sendall(frame(signed_oru(**report("C2"))))
        assert _closed_by_peer(refused, 5.0)
    first.send_raw(message[100:] + b"\x1c\r")
    assert b"MSA|AA|C1" in first.read_ack()
    wait_for(
        lambda: [c.active for c in listener.connections._open.values()] == [False], 5, "an idle connection"
    )
    with MllpConnection("127.0.0.1", listener.port) as second:  # the first is idle now: it makes room
        assert second.send(signed_oru(**report("C3"))).ack_code == "AA"
        assert _closed_by_peer(first.sock, 5.0)
    first.close()
    assert [row.message_key for row in rows(sqlite_db)] == ["RADRIS|C1", "RADRIS|C3"]


def test_stop_closes_idle_connections_and_frees_the_port(sqlite_db, start_listener):
    listener = start_listener(sqlite_db)
    port = listener.port
    idle = MllpConnection("127.0.0.1", port)
    assert idle.send(signed_oru(**report())).ack_code == "AA"
    started = time.monotonic()
    listener.stop()
    assert time.monotonic() - started < 3.0 and len(listener.connections) == 0
    assert _closed_by_peer(idle.sock, 2.0)
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
