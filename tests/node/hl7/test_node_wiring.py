"""`echo-node serve` (the Node) starts the HL7 listener when ECHO_HL7_LISTEN is set and stops it."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import select

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
