"""send_hl7 against a real MLLP server on loopback, one test per branch; FrameReader on its own."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from typing import Any

import hl7
import pytest

from exporters.identity import ModelIdentity, StudyInfo
from exporters.mllp import FrameReader, FrameTooLarge, frame, send_hl7
from exporters.oru import build_oru, encode_er7
from exporters.outcome import SendStatus

CONTROL_ID = "CTRL0001"
FINDINGS = "Heart size is normal.\nPipe | and caret ^ kept."
IMPRESSION = "No acute disease."


@pytest.fixture
def oru(study: StudyInfo, model: ModelIdentity) -> bytes:
    message = build_oru(
        study,
        FINDINGS,
        IMPRESSION,
        model,
        control_id=CONTROL_ID,
        sending_app="ECHO",
        sending_facility="GENERAL",
        receiving_app="RIS",
        receiving_facility="GENERAL",
        now=datetime(2025, 1, 2, 4, 0, tzinfo=UTC),
    )
    return encode_er7(message)


def control_id_of(message: hl7.Message) -> str:
    return str(message.segment("MSH")[10])


def send(peer: Any, payload: bytes, **options: Any) -> Any:
    return send_hl7(
        payload, peer.host, peer.port, control_id=CONTROL_ID, timeout=options.pop("timeout", 3), **options
    )


def test_aa_is_delivered_and_the_ris_reads_the_same_report(
    ris, ack_message, oru: bytes, study: StudyInfo
) -> None:
    ris.respond = lambda message: [ack_message(control_id_of(message), "AA")]

    outcome = send(ris, oru)

    assert outcome.status is SendStatus.DELIVERED and outcome.ack_code == "AA" and outcome.error is None
    (received,) = ris.received
    assert received.unescape(str(received.segment("OBR")[18])) == study.accession_number
    assert str(received.segment("PID")[3][0][0]) == study.patient_id
    assert str(received.segment("PID")[5]) == "Doe^Jane"
    texts = [received.unescape(str(obx[5])) for obx in received.segments("OBX") if str(obx[2]) == "TX"]
    assert texts == [*FINDINGS.splitlines(), IMPRESSION]


def test_ae_is_retried_with_the_error_text(ris, ack_message, oru: bytes) -> None:
    ris.respond = lambda message: [
        ack_message(control_id_of(message), "AE", "", "ERR||||E|||Database locked")
    ]

    outcome = send(ris, oru)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == "receiver error (AE): Database locked"


def test_ar_is_a_permanent_failure_with_its_text(ris, ack_message, oru: bytes) -> None:
    ris.respond = lambda message: [ack_message(control_id_of(message), "AR", "Unknown accession")]

    outcome = send(ris, oru)

    assert outcome.status is SendStatus.FAILED
    assert outcome.error == "receiver rejected the message (AR): Unknown accession"
    assert outcome.raw_ack.startswith("MSH|^~\\&|RIS")


def test_no_answer_is_a_timeout_and_retried(ris, oru: bytes) -> None:
    ris.respond = lambda message: None

    outcome = send(ris, oru, timeout=0.5)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == f"timeout: no complete ACK from 127.0.0.1:{ris.port} within 0.5s"
    assert len(ris.received) == 1


def test_ack_with_another_control_id_is_retried(ris, ack_message, oru: bytes) -> None:
    ris.respond = lambda message: [ack_message("SOMEONE-ELSE", "AA")]

    outcome = send(ris, oru)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith("protocol error: ACK is for control id 'SOMEONE-ELSE'")


def test_ack_split_across_packets_after_stray_bytes_is_read_whole(ris, ack_message, oru: bytes) -> None:
    def respond(message: hl7.Message) -> list[bytes]:
        framed = ack_message(control_id_of(message), "AA")
        return [b"noise\r\n", framed[:1], framed[1:20], framed[20:-1], framed[-1:]]

    ris.respond = respond

    outcome = send(ris, oru)

    assert outcome.status is SendStatus.DELIVERED


def test_garbage_then_hang_up_is_retried(ris, oru: bytes) -> None:
    ris.respond = lambda message: [b"HTTP/1.1 400 Bad Request\r\n\r\n"]
    ris.hang_up = True

    outcome = send(ris, oru)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == (
        f"network error with 127.0.0.1:{ris.port}: connection closed before a complete ACK frame"
    )


def test_garbage_inside_a_frame_is_a_malformed_ack(ris, oru: bytes) -> None:
    ris.respond = lambda message: [b"\x0bnot an hl7 message\x1c\r"]

    outcome = send(ris, oru)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == "malformed ACK: no MSH segment"


def test_refused_connection_is_retried(closed_port: int, oru: bytes) -> None:
    outcome = send_hl7(oru, "127.0.0.1", closed_port, control_id=CONTROL_ID, timeout=2)

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == f"connection refused by 127.0.0.1:{closed_port}"


def test_tls_delivers_when_the_certificate_is_trusted(tls_ris, ack_message, certificate, oru: bytes) -> None:
    tls_ris.respond = lambda message: [ack_message(control_id_of(message), "AA")]
    context = ssl.create_default_context(cafile=str(certificate.cert))

    outcome = send(tls_ris, oru, tls_context=context)

    assert outcome.status is SendStatus.DELIVERED
    assert len(tls_ris.received) == 1


def test_tls_with_an_untrusted_certificate_is_retried_and_sends_nothing(tls_ris, oru: bytes) -> None:
    outcome = send(tls_ris, oru, tls_context=ssl.create_default_context())

    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith(
        f"TLS handshake with 127.0.0.1:{tls_ris.port} failed: certificate not trusted"
    )
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error
    assert tls_ris.received == []


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"message_bytes": b""}, ValueError, "message_bytes must be an encoded HL7 message"),
        ({"message_bytes": "MSH|^~\\&"}, ValueError, "message_bytes must be an encoded HL7 message"),
        ({"control_id": "CTRL0002"}, ValueError, r"control_id 'CTRL0002' is not the message's MSH-10 \('CTRL0001'\)"),
        ({"host": ""}, ValueError, "host must be a non-empty string"),
        ({"port": 70000}, ValueError, "port must be between 1 and 65535"),
        ({"timeout": -1}, ValueError, "timeout must be a positive number"),
        ({"tls_context": True}, TypeError, "tls_context must be an ssl.SSLContext"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused(arguments: dict, error: type, message: str, oru: bytes) -> None:
    call = {
        "message_bytes": oru,
        "host": "127.0.0.1",
        "port": 2575,
        "control_id": CONTROL_ID,
        "timeout": 1,
        **arguments,
    }
    with pytest.raises(error, match=message):
        send_hl7(call.pop("message_bytes"), call.pop("host"), call.pop("port"), **call)


def test_framing_bytes_inside_a_message_are_refused() -> None:
    with pytest.raises(ValueError, match="message contains an MLLP framing byte"):
        frame(b"MSH|^~\\&|\x1c")
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"


def test_frame_reader_waits_for_the_end_block_and_drops_leading_noise() -> None:
    reader = FrameReader()

    assert reader.feed(b"junk") is None
    assert reader.feed(b"\x0bMSH|a") is None
    assert reader.feed(b"|b\x1c") is None
    assert reader.feed(b"\r\x0bnext") == b"MSH|a|b"
    assert reader.feed(b"\x1c\r") == b"next"


def test_frame_reader_restarts_on_a_new_start_block_and_skips_an_orphan_end() -> None:
    reader = FrameReader()

    assert reader.feed(b"\x1c\r\x0bbroken\x0bMSH|ok\x1c\r") == b"MSH|ok"


def test_frame_reader_gives_up_on_an_endless_frame() -> None:
    reader = FrameReader(max_bytes=16)

    with pytest.raises(FrameTooLarge, match="more than 16 bytes without an end of frame"):
        reader.feed(b"\x0b" + b"x" * 32)
