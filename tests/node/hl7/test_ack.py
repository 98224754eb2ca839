"""The ACK: MSH swapped, MSA-1/2/3, ERR by version, read back by the node's own ACK checker and hl7apy."""

from __future__ import annotations

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from exporters.ack import check_ack
from exporters.outcome import SendStatus
from node.hl7.ack import AckCode, Condition, Header, OwnNames, build_ack

HEADER = Header(
    sending_application="RISAPP",
    sending_facility="RADRIS",
    receiving_application="ECHO",
    receiving_facility="SITE",
    control_id="MSG|0001",
    processing_id="P",
    version="2.5.1",
    message_code="ORU",
    trigger="R01",
)


def fields(ack: str, segment: str) -> list[str]:
    message = hl7.parse(ack)
    return [str(field) for field in message.segment(segment)]


def test_aa_swaps_the_header_and_names_the_message_it_answers():
    ack = build_ack(HEADER, AckCode.ACCEPT)
    msh = fields(ack, "MSH")
    assert msh[3:7] == ["ECHO", "SITE", "RISAPP", "RADRIS"]
    assert msh[9] == "ACK^R01^ACK" and msh[11] == "P" and msh[12] == "2.5.1" and msh[10]
    assert fields(ack, "MSA")[1:3] == ["AA", "MSG\\F\\0001"]
    assert "ERR" not in [str(segment[0]) for segment in hl7.parse(ack)]
    assert check_ack(ack.encode(), "MSG|0001").status is SendStatus.DELIVERED
    assert parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT).msa.msa_1.to_er7() == "AA"


@pytest.mark.parametrize(
    ("code", "status"), [(AckCode.ERROR, SendStatus.RETRY), (AckCode.REJECT, SendStatus.FAILED)]
)
def test_ae_and_ar_carry_the_reason_in_msa_3_and_err(code, status):
    reason = "result status P (OBR-25) is not final"
    ack = build_ack(HEADER, code, reason, Condition.TABLE_VALUE_NOT_FOUND)
    assert fields(ack, "MSA")[1:4] == [code.value, "MSG\\F\\0001", reason]
    err = fields(ack, "ERR")
    assert err[3] == "103^Table value not found^HL70357" and err[4] == "E" and err[8] == reason
    outcome = check_ack(ack.encode(), "MSG|0001")
    assert outcome.status is status and reason in (outcome.error or "")
    parse_message(ack, validation_level=VALIDATION_LEVEL.STRICT)  # a valid v2.5.1 ACK


def test_an_older_version_is_answered_in_it_with_err_1():
    ack = build_ack(
        Header(control_id="C1", version="2.3", trigger="T02"),
        AckCode.REJECT,
        "no",
        Condition.UNSUPPORTED_EVENT_CODE,
    )
    assert fields(ack, "MSH")[12] == "2.3" and fields(ack, "MSH")[9] == "ACK^T02^ACK"
    assert fields(ack, "ERR")[1] == "^^^201&Unsupported event code&HL70357"
    assert (
        check_ack(ack.encode(), "C1").error
        == "receiver rejected the message (AR): no; Unsupported event code"
    )


@pytest.mark.parametrize("version", ["2.8.2", "", "9.9"])
def test_a_version_hl7apy_cannot_write_faithfully_is_answered_in_2_5_1(version):
    ack = build_ack(Header(control_id="C1", version=version), AckCode.ERROR, "x")
    assert fields(ack, "MSH")[12] == "2.5.1" and fields(ack, "ERR")[3].startswith("207^")


def test_without_a_readable_header_the_ack_uses_the_nodes_own_names():
    ack = build_ack(None, AckCode.ERROR, "not an HL7 message", Condition.SEGMENT_SEQUENCE_ERROR)
    assert fields(ack, "MSH")[3:5] == ["ECHO", "ECHO"] and fields(ack, "MSH")[9] == "ACK"
    assert fields(ack, "MSA")[1:4] == ["AE", "", "not an HL7 message"]
    own = build_ack(None, AckCode.ERROR, "x", own=OwnNames("NODE", "WARD"))
    assert fields(own, "MSH")[3:5] == ["NODE", "WARD"]


def test_a_long_reason_is_cut_to_what_msa_3_holds_and_kept_longer_in_err_8():
    reason = "word | " * 60
    ack = build_ack(HEADER, AckCode.REJECT, reason)
    msa_3, err_8 = fields(ack, "MSA")[3], fields(ack, "ERR")[8]
    assert len(msa_3) <= 80 and msa_3.endswith("...") and "\\F\\" in msa_3
    assert 80 < len(err_8) <= 250
