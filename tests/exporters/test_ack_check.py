"""check_ack: one test per MSA-1 / MSA-2 branch, ERR text in both layouts, and malformed ACKs."""

from __future__ import annotations

import pytest

from exporters.ack import check_ack
from exporters.outcome import SendStatus

MSH = "MSH|^~\\&|RIS|HOSP|ECHO|HOSP|20250102030405||ACK^R01^ACK|A1|P|2.5.1"


def ack(*segments: str, msh: str = MSH, separator: str = "\r") -> bytes:
    return separator.join([msh, *segments]).encode()


@pytest.mark.parametrize("code", ["AA", "CA"])
def test_accept_is_delivered(code: str) -> None:
    outcome = check_ack(ack(f"MSA|{code}|CTRL1"), "CTRL1")

    assert outcome.status is SendStatus.DELIVERED and outcome.error is None
    assert outcome.ack_code == code
    assert outcome.raw_ack == f"{MSH}\rMSA|{code}|CTRL1"


@pytest.mark.parametrize("code", ["AE", "CE"])
def test_error_is_retried_with_its_text(code: str) -> None:
    outcome = check_ack(ack(f"MSA|{code}|CTRL1|Database busy"), "CTRL1")

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == f"receiver error ({code}): Database busy"
    assert outcome.ack_text == "Database busy"


@pytest.mark.parametrize("code", ["AR", "CR"])
def test_reject_is_a_permanent_failure_with_its_text(code: str) -> None:
    outcome = check_ack(ack(f"MSA|{code}|CTRL1", "ERR||||E|||Unknown\\T\\bad patient|No such order"), "CTRL1")

    assert outcome.status is SendStatus.FAILED
    assert outcome.error == f"receiver rejected the message ({code}): No such order; Unknown&bad patient"


def test_err_v25_coded_error_text_and_v23_location_text_are_read() -> None:
    v25 = check_ack(ack("MSA|AE|CTRL1", "ERR|||207^Application internal error^HL70357|E"), "CTRL1")
    v23 = check_ack(ack("MSA|AE|CTRL1", "ERR|OBR^1^18^101&Required field missing&HL70357"), "CTRL1")

    assert v25.ack_text == "Application internal error"
    assert v23.ack_text == "Required field missing"


def test_ack_for_another_control_id_is_a_protocol_error_and_retried() -> None:
    outcome = check_ack(ack("MSA|AR|OTHER9|rejected"), "CTRL1")

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == "protocol error: ACK is for control id 'OTHER9', not 'CTRL1'; resending"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "malformed ACK: no MSH segment"),
        (b"hello there", "malformed ACK: no MSH segment"),
        (MSH.encode(), "malformed ACK: no MSA segment"),
        (ack("MSA|XX|CTRL1"), "malformed ACK: unknown acknowledgment code 'XX'"),
    ],
)
def test_malformed_acks_are_retried(payload: bytes, reason: str) -> None:
    outcome = check_ack(payload, "CTRL1")

    assert outcome.status is SendStatus.RETRY
    assert outcome.error == reason


def test_own_encoding_characters_and_newline_separators_are_understood() -> None:
    custom = "MSH#$*!%#RIS#HOSP#ECHO#HOSP#20250102030405##ACK$R01$ACK#A1#P#2.3"

    outcome = check_ack(ack("MSA#AE#CTRL1#Busy!F!try later", msh=custom, separator="\r\n"), "CTRL1")

    assert outcome.status is SendStatus.RETRY
    assert outcome.ack_text == "Busy#try later"


def test_a_short_msh_2_falls_back_to_the_default_subcomponent_separator() -> None:
    short = "MSH|^~\\|RIS|HOSP|ECHO|HOSP|20250102030405||ACK|A1|P|2.3"

    outcome = check_ack(ack("MSA|AA|CTRL1", msh=short), "CTRL1")

    assert outcome.delivered
