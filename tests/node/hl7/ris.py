"""A RIS simulator: signed reports (ORU^R01 final or corrected, MDM^T02) sent to the node over MLLP.

For tests and demos. The messages are written by hand as ER7, the way a RIS interface engine
writes them, not with the node's own hl7apy builder, so the listener is tested against a second
writer: MSH, PID, ORC, OBR (OBR-3 filler order number and OBR-18 both the accession, OBR-22 the
signing time, OBR-25 the result status), an HD OBX with the Study Instance UID (113014 DCM, as
IHE RAD-28 carries it), then one TX OBX per line of the report text, which has FINDINGS: and
IMPRESSION: headings.

    from tests.node.hl7.ris import send_signed_report
    code = send_signed_report("127.0.0.1", 2575, accession="A1", study_uid="1.2.3",
                              findings="...", impression="...", control_id="M1", facility="RIS")
    assert code == "AA"
"""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime

from exporters.ack import check_ack
from exporters.hl7_escape import escape_text
from exporters.mllp import FrameReader, frame, send_hl7
from exporters.outcome import AckOutcome

TEXT_OBSERVATION = "18782-3^Radiology Study observation^LN"
STUDY_OBSERVATION = "113014^DICOM Study^DCM"


class NoAck(ConnectionError):
    """The node did not answer with an ACK (refused, reset, timed out); the message says how."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S%z")


def _msh(message_type: str, control_id: str, facility: str, version: str) -> str:
    return (
        f"MSH|^~\\&|RISAPP|{escape_text(facility)}|ECHO|ECHO|{_now()}||{message_type}|"
        f"{escape_text(control_id)}|P|{version}|||||UNICODE UTF-8"
    )


def report_lines(findings: str, impression: str) -> list[str]:
    """The report as a RIS writes it: headed sections, one line per OBX."""
    lines = ["FINDINGS:", *findings.splitlines()] if findings.strip() else []
    if impression.strip():
        lines += ["IMPRESSION:", *impression.splitlines()]
    return [line for line in lines if line.strip()]


def signed_oru(
    *,
    accession: str | None,
    study_uid: str | None,
    findings: str,
    impression: str,
    control_id: str,
    facility: str = "RIS",
    status: str = "F",
    version: str = "2.5.1",
    patient_id: str = "MRN0042",
) -> bytes:
    """An ORU^R01 with the signed report, as sent on the wire (segments ended by CR, UTF-8)."""
    order = escape_text(accession or "")
    segments = [
        _msh("ORU^R01^ORU_R01", control_id, facility, version),
        f"PID|1||{escape_text(patient_id)}^^^HOSP^MR||Doe^Jane||19700101|F",
        f"ORC|RE||{order}",
        f"OBR|1||{order}|36554-4^XR Chest 2 views^LN|||20250102030405|||||||||||{order}"
        f"||||{_now()}||RAD|{status}",
    ]
    observations = []
    if study_uid:
        observations.append(f"HD|{STUDY_OBSERVATION}||{escape_text(study_uid)}")
    observations += [f"TX|{TEXT_OBSERVATION}|{n}|{escape_text(line)}" for n, line in enumerate(
        report_lines(findings, impression), 1)]  # fmt: skip
    segments += [f"OBX|{n}|{obx}||||||{status}" for n, obx in enumerate(observations, 1)]
    return ("\r".join(segments) + "\r").encode("utf-8")


def signed_mdm(
    *,
    accession: str | None,
    study_uid: str | None,
    text: str,
    control_id: str,
    facility: str = "RIS",
    completion: str = "AU",
    version: str = "2.5.1",
) -> bytes:
    """An MDM^T02 (original document notification and content): TXA-17 `completion`, TXA-15 accession."""
    order = escape_text(accession or "")
    txa = ["TXA", "1", "RAD", "TX", _now()] + [""] * 10 + [order, "", completion]  # TXA-4, 15, 17
    segments = [
        _msh("MDM^T02^MDM_T02", control_id, facility, version),
        f"EVN|T02|{_now()}",
        "PID|1||MRN0042^^^HOSP^MR||Doe^Jane",
        "PV1|1|O",
        "|".join(txa),
    ]
    lines = [line for line in text.splitlines() if line.strip()]
    segments += [
        f"OBX|{n}|TX|REPORT^Report text^L||{escape_text(line)}||||||F" for n, line in enumerate(lines, 1)
    ]
    if study_uid:
        segments.append(f"ZDS|{escape_text(study_uid)}^RISAPP^Application^DICOM")
    return ("\r".join(segments) + "\r").encode("utf-8")


def send_message(
    host: str, port: int, message: bytes, *, timeout: float = 10.0, tls: ssl.SSLContext | None = None
) -> AckOutcome:
    """Send one message on a new connection and judge the ACK the way the node's own sender does."""
    control_id = message.split(b"\r", 1)[0].split(b"|")[9].decode()
    return send_hl7(message, host, port, control_id=control_id, timeout=timeout, tls_context=tls)


def send_signed_report(
    host: str,
    port: int,
    *,
    accession: str | None,
    study_uid: str | None,
    findings: str,
    impression: str,
    control_id: str,
    facility: str,
    status: str = "F",
    tls: ssl.SSLContext | None = None,
) -> str:
    """Send a signed ORU for one study; the node's MSA-1 (AA, AE or AR). NoAck when none came."""
    message = signed_oru(
        accession=accession,
        study_uid=study_uid,
        findings=findings,
        impression=impression,
        control_id=control_id,
        facility=facility,
        status=status,
    )
    outcome = send_message(host, port, message, tls=tls)
    if outcome.ack_code is None:
        raise NoAck(outcome.error or "no ACK")
    return outcome.ack_code


class MllpConnection:
    """One kept-open connection that sends messages (or any bytes) and reads an ACK for each."""

    def __init__(
        self, host: str, port: int, *, timeout: float = 10.0, tls: ssl.SSLContext | None = None
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = tls.wrap_socket(sock, server_hostname=host) if tls is not None else sock
        self.reader = FrameReader(max_bytes=1 << 20)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_ack(self) -> bytes:
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise NoAck("the node closed the connection before an ACK")
            payload = self.reader.feed(chunk)
            if payload is not None:
                return payload

    def send(self, message: bytes) -> AckOutcome:
        control_id = message.split(b"\r", 1)[0].split(b"|")[9].decode("utf-8", "replace")
        self.send_raw(frame(message))
        return check_ack(self.read_ack(), control_id)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
