"""`echo-node serve` (the Node) starts the HL7 listener when ECHO_HL7_LISTEN is set and stops it."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

from node.hl7.listener import start_listener
from node.serve.runtime import Node, NodeStartError
from node.store.models import SignedReport
from tests.node.hl7.ris import send_signed_report


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_node_serves_signed_reports_when_told_to_and_stops_the_listener(start_node, make_settings):
    assert start_node(make_settings()).hl7 is None  # unset: no listener
    port = free_port()
    node = start_node(make_settings(hl7_listen=f"127.0.0.1:{port}", hl7_allowed_facilities="RADRIS"))
    code = send_signed_report(
        "127.0.0.1", port, accession="ACC9", study_uid="1.2.3.9", findings="Heart normal.",
        impression="Normal.", control_id="N1", facility="RADRIS",
    )  # fmt: skip
    assert code == "AA"
    with node.database.sessions() as session:
        assert session.scalars(select(SignedReport.message_key)).all() == ["RADRIS|N1"]
    node.stop()
    assert node.hl7 is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_taken_hl7_port_stops_the_start_with_one_line(make_settings, publisher):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        node = Node(make_settings(hl7_listen=f"127.0.0.1:{port}"), publisher=publisher, embedded_worker=False)
        try:
            with pytest.raises(NodeStartError, match=f"cannot listen for HL7 on 127.0.0.1:{port}: "):
                node.start()
        finally:
            node.stop()


def test_the_listener_from_settings_warns_when_open_to_any_facility_and_takes_its_tls_files(
    sqlite_db, make_settings, certificate, caplog
):
    port = free_port()
    tls = {"hl7_tls_cert": certificate.cert, "hl7_tls_key": certificate.key}
    listener = start_listener(make_settings(hl7_listen=f"127.0.0.1:{port}", **tls), sqlite_db.sessions)
    try:
        assert "ECHO_HL7_ALLOWED_FACILITIES is empty" in caplog.text
        code = send_signed_report(
            "127.0.0.1", port, accession="ACC9", study_uid=None, findings="Heart normal.", impression="",
            control_id="T1", facility="ANYRIS", tls=certificate.client(),
        )  # fmt: skip
        assert code == "AA"
    finally:
        listener.stop()
    caplog.clear()
    closed = start_listener(
        make_settings(hl7_listen=f"127.0.0.1:{port}", hl7_allowed_facilities="RADRIS"), sqlite_db.sessions
    )
    closed.stop()
    assert "ECHO_HL7_ALLOWED_FACILITIES is empty" not in caplog.text
