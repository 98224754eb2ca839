"""Issue 15 #18: a failed send says why, in words an operator can act on.

A refused association names the rejection's result, source and reason, also when the PACS sends a
reason PS3.8 does not define (pynetdicom cannot decode it and the failure looked like a timeout). A
TLS-configured node talking to a plain PACS or RIS reports a failed TLS handshake, not "could not
connect" or "no complete ACK". Real peers on loopback: pynetdicom and DCMTK SCPs, an MLLP listener.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydicom import Dataset

from exporters.dicom_sender import StorePeer, describe_rejection, send_datasets
from exporters.identity import ModelIdentity, StudyInfo
from exporters.mllp import send_hl7
from exporters.oru import build_oru, encode_er7
from exporters.outcome import SendStatus
from exporters.sr import build_sr

CONTROL_ID = "CTRL0001"


def a_associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return bytes([0x03, 0, 0, 0, 0, 4, 0, result, source, reason])


@pytest.fixture
def report(image: Dataset, model: ModelIdentity) -> Dataset:
    return build_sr([image], "Heart size is normal.", "No acute disease.", model)


@pytest.fixture
def oru(study: StudyInfo, model: ModelIdentity) -> bytes:
    message = build_oru(
        study,
        "Heart size is normal.",
        "No acute disease.",
        model,
        control_id=CONTROL_ID,
        sending_app="ECHO",
        sending_facility="GENERAL",
        receiving_app="RIS",
        receiving_facility="GENERAL",
        now=datetime(2025, 1, 2, 4, 0, tzinfo=UTC),
    )
    return encode_er7(message)


def peer_of(fake: Any) -> StorePeer:
    return StorePeer(ae_title="PACS", host=fake.host, port=fake.port)


def client_tls(certificate: Any = None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate.cert) if certificate else None)


# --- refused associations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu", "words"),
    [
        (a_associate_rj(1, 1, 0), "Rejected (Permanent), source DUL service-user, reason 0 (reserved or not defined by PS3.8)"),
        (a_associate_rj(2, 3, 9), "Rejected (Transient), source DUL service-provider (presentation related), reason 9 (reserved or not defined by PS3.8)"),
        (a_associate_rj(1, 2, 3), "Rejected (Permanent), source DUL service-provider (ACSE related), reason 3 (reserved or not defined by PS3.8)"),
    ],
)  # fmt: skip
def test_a_rejection_with_a_reason_outside_ps38_is_named_not_taken_for_a_timeout(
    raw_peer, pdu: bytes, words: str, report: Dataset
) -> None:
    """pynetdicom cannot decode these reasons; the send used to report 'timeout or disconnect'."""
    raw_peer.reply = pdu

    (outcome,) = send_datasets([report], peer_of(raw_peer), calling_ae="ECHO", timeout=1)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == f"association rejected by PACS@127.0.0.1:{raw_peer.port}: {words}"


def test_a_pynetdicom_scp_rejecting_the_calling_ae_is_named(picky_pacs, report: Dataset) -> None:
    (outcome,) = send_datasets([report], peer_of(picky_pacs), calling_ae="STRANGER", timeout=5)

    assert outcome.error == (
        f"association rejected by PACS@127.0.0.1:{picky_pacs.port}: "
        "Rejected (Permanent), source DUL service-user, reason Calling AE title not recognised"
    )


@pytest.fixture
def refusing_storescp(closed_port: int) -> Iterator[int]:
    """DCMTK's storescp with --refuse: it answers every association request with A-ASSOCIATE-RJ."""
    if shutil.which("/usr/bin/storescp") is None:
        pytest.skip("DCMTK storescp is not installed")
    process = subprocess.Popen(
        ["/usr/bin/storescp", "--refuse", str(closed_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", closed_port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield closed_port
    process.terminate()
    process.wait(timeout=5)


@pytest.mark.integration
def test_dcmtk_refusing_the_association_gives_a_non_empty_reason(
    refusing_storescp: int, report: Dataset
) -> None:
    (outcome,) = send_datasets(
        [report], StorePeer("PACS", "127.0.0.1", refusing_storescp), calling_ae="ECHO", timeout=5
    )

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == (
        f"association rejected by PACS@127.0.0.1:{refusing_storescp}: "
        "Rejected (Permanent), source DUL service-user, reason No reason given"
    )


def test_describe_rejection_words_every_ps38_value() -> None:
    assert describe_rejection(2, 3, 1) == (
        "Rejected (Transient), source DUL service-provider (presentation related), reason Temporary congestion"
    )
    assert describe_rejection(7, 9, 9) == (
        "Rejected (result 7, not defined by PS3.8), source 9 (not defined by PS3.8), "
        "reason 9 (reserved or not defined by PS3.8)"
    )


# --- TLS client, plain peer ------------------------------------------------------------------------


def test_a_tls_client_at_a_plain_pacs_reports_the_tls_handshake(pacs, report: Dataset) -> None:
    """It used to say 'could not connect to PACS@… (refused, unreachable or timed out)'."""
    (outcome,) = send_datasets([report], peer_of(pacs), calling_ae="ECHO", timeout=2, tls=client_tls())

    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith(f"TLS handshake with PACS@127.0.0.1:{pacs.port} failed: ")
    assert "the port may be plain DICOM without TLS" in outcome.error
    assert pacs.received == []


def test_a_tls_client_at_a_tls_pacs_it_does_not_trust_reports_the_certificate(
    tls_pacs, report: Dataset
) -> None:
    (outcome,) = send_datasets([report], peer_of(tls_pacs), calling_ae="ECHO", timeout=2, tls=client_tls())

    assert outcome.error.startswith(
        f"TLS handshake with PACS@127.0.0.1:{tls_pacs.port} failed: certificate not trusted "
        "(CERTIFICATE_VERIFY_FAILED"
    )
    assert tls_pacs.received == []


def test_a_closed_port_with_tls_configured_still_says_could_not_connect(
    closed_port: int, report: Dataset
) -> None:
    (outcome,) = send_datasets(
        [report], StorePeer("PACS", "127.0.0.1", closed_port), calling_ae="ECHO", timeout=1, tls=client_tls()
    )

    assert outcome.error.startswith(f"could not connect to PACS@127.0.0.1:{closed_port}")


def test_a_tls_client_at_a_plain_ris_reports_the_tls_handshake(ris, oru: bytes) -> None:
    """The plain RIS waits for an MLLP frame that never comes: it used to say 'no complete ACK'."""
    outcome = send_hl7(oru, ris.host, ris.port, control_id=CONTROL_ID, timeout=1, tls_context=client_tls())

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == (
        f"TLS handshake with 127.0.0.1:{ris.port} failed: no TLS answer within 1s; "
        "the port may be plain MLLP without TLS"
    )
    assert ris.received == []


def test_a_tls_client_at_a_plain_listener_that_answers_text_reports_the_tls_handshake(
    raw_peer, oru: bytes
) -> None:
    raw_peer.reply = b"\x0bMSH|^~\\&|RIS|HOSP|ECHO|HOSP|20250102||ACK|1|P|2.5.1\rMSA|AR|?\r\x1c\r"

    outcome = send_hl7(
        oru, raw_peer.host, raw_peer.port, control_id=CONTROL_ID, timeout=2, tls_context=client_tls()
    )

    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith(f"TLS handshake with 127.0.0.1:{raw_peer.port} failed: ")
    assert "the port may be plain MLLP without TLS" in outcome.error


def test_a_tls_client_at_a_plain_listener_that_hangs_up_reports_the_tls_handshake(oru: bytes) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(5)
    try:

        def hang_up() -> None:
            connection, _ = listener.accept()
            connection.recv(65536)
            connection.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        outcome = send_hl7(oru, "127.0.0.1", port, control_id=CONTROL_ID, timeout=2, tls_context=client_tls())
        thread.join(timeout=5)
    finally:
        listener.close()

    assert outcome.error == (
        f"TLS handshake with 127.0.0.1:{port} failed: the peer closed the connection; "
        "the port may be plain MLLP without TLS, or it refuses this client's TLS"
    )
