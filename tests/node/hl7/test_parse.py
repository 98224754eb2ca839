"""Reading signed reports: ORU final / corrected, MDM^T02, the node's own ORU signed, and refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporters.identity import ModelIdentity, StudyInfo
from exporters.oru import build_oru, encode_er7
from node.hl7.ack import AckCode, Condition
from node.hl7.parse import read_message
from node.hl7.sections import split_sections
from node.store.states import SignedSource
from tests.node.hl7.ris import signed_mdm, signed_oru

UID = "1.2.826.0.1.3680043.8.498.77"
FINDINGS = "Heart size is normal.\nNo pleural effusion | no pneumothorax."
IMPRESSION = "No acute cardiopulmonary process."


def oru(**overrides: object) -> bytes:
    values: dict = {
        "accession": "ACC77",
        "study_uid": UID,
        "findings": FINDINGS,
        "impression": IMPRESSION,
        "control_id": "MSG0001",
        "facility": "RADRIS",
    }
    return signed_oru(**{**values, **overrides})


def segments_replaced(message: bytes, segment: str, field: int, value: str) -> bytes:
    """The message with one field of every `segment` set to `value` (a RIS's variation)."""
    lines = message.decode().split("\r")
    for index, line in enumerate(lines):
        fields = line.split("|")
        if fields[0] == segment:
            fields += [""] * (field + 1 - len(fields))
            fields[field if segment != "MSH" else field - 1] = value
            lines[index] = "|".join(fields)
    return "\r".join(lines).encode()


def refused(message: bytes):
    reading = read_message(message)
    assert reading.report is None and reading.refusal is not None
    return reading.refusal


def test_a_final_oru_is_read_whole():
    reading = read_message(oru())
    report = reading.report
    assert reading.refusal is None and report is not None
    assert report.source is SignedSource.HL7 and report.message_type == "ORU^R01"
    assert report.message_key == "RADRIS|MSG0001" and report.sending_facility == "RADRIS"
    assert (report.accession_number, report.study_instance_uid, report.result_status) == ("ACC77", UID, "F")
    assert report.findings == FINDINGS and report.impression == IMPRESSION
    assert report.text.startswith("FINDINGS:\nHeart size is normal.")
    assert report.raw is not None and report.raw.startswith("MSH|^~\\&|RISAPP|RADRIS")
    assert report.signed_at is not None and report.signed_at.tzinfo is not None
    assert report.parsed["accession_field"] == "OBR-18" and report.parsed["study_uid_field"] == "OBX-5"
    assert reading.header is not None and reading.header.control_id == "MSG0001"


def test_a_corrected_oru_is_taken_as_corrected():
    assert read_message(oru(status="C")).report.result_status == "C"
    # OBR-25 left empty: the text OBXs' OBX-11 decide
    no_obr_status = segments_replaced(oru(status="C"), "OBR", 25, "")
    report = read_message(no_obr_status).report
    assert report.result_status == "C" and report.parsed["result_status_field"] == "OBX-11"


@pytest.mark.parametrize("status", ["P", "I", "S", "X"])
def test_a_report_not_final_is_refused_ar(status):
    refusal = refused(oru(status=status))
    assert refusal.code is AckCode.REJECT and refusal.condition is Condition.TABLE_VALUE_NOT_FOUND
    assert f"result status {status} (OBR-25) is not final" in refusal.reason
    only_obx = refused(segments_replaced(oru(status="P"), "OBR", 25, ""))
    assert "result status P (OBX-11) is not final" in only_obx.reason


def test_an_mdm_t02_authenticated_is_read_and_split_by_its_headings():
    text = "CLINICAL HISTORY: cough.\nImpression: Normal chest.\nFINDINGS:\nHeart normal.\nLungs clear."
    reading = read_message(signed_mdm(accession="ACC78", study_uid=UID, text=text, control_id="DOC1"))
    report = reading.report
    assert reading.refusal is None and report is not None
    assert report.message_type == "MDM^T02" and report.result_status == "F"
    assert report.findings == "Heart normal.\nLungs clear." and report.impression == "Normal chest."
    assert report.accession_number == "ACC78" and report.parsed["accession_field"] == "TXA-15"
    assert report.study_instance_uid == UID and report.parsed["study_uid_field"] == "ZDS-1"
    assert report.parsed["document_status"] == "AU"
    legally = signed_mdm(accession="A", study_uid=None, text="x", control_id="D2", completion="LA")
    assert read_message(legally).report is not None


@pytest.mark.parametrize("completion", ["DI", "DO", "IP", "IN", "PA", ""])
def test_an_mdm_not_authenticated_is_refused_ar(completion):
    message = signed_mdm(
        accession="A", study_uid=UID, text="FINDINGS: x", control_id="D", completion=completion
    )
    refusal = refused(message)
    assert refusal.code is AckCode.REJECT and "(TXA-17) is not final" in refusal.reason


def test_the_nodes_own_oru_signed_by_the_ris_round_trips():
    study = StudyInfo(
        patient_id="MRN0042",
        patient_name="Doe^Jane",
        birth_date="19700101",
        sex="F",
        accession_number="ACC0042",
        study_instance_uid=UID,
        filler_order_number="FI-7",
        procedure_code="36554-4",
        procedure_description="XR Chest PA",
    )
    model = ModelIdentity(name="echo-student", version="1.2.0", manufacturer="ECHO Project")
    findings = "Heart size is normal.\nPipe | caret ^ amp & tilde ~ backslash \\ kept."
    message = build_oru(
        study, findings, IMPRESSION, model, control_id="DRAFT01", sending_app="RIS", sending_facility="HOSP",
        receiving_app="ECHO", receiving_facility="ECHO", now=datetime(2025, 1, 2, 4, 0, tzinfo=UTC),
    )  # fmt: skip
    draft = refused(encode_er7(message))  # as the node sent it: preliminary
    assert draft.code is AckCode.REJECT and "result status P" in draft.reason
    order = message.oru_r01_patient_result.oru_r01_order_observation
    order.obr.obr_25 = "F"  # the radiologist signed it unchanged
    for observation in order.children:
        if observation.name == "ORU_R01_OBSERVATION":
            observation.obx.obx_11 = "F"
    report = read_message(encode_er7(message)).report
    assert report is not None and report.parsed["sections"] == "coded"
    assert (report.findings, report.impression) == (findings, IMPRESSION)
    assert (report.accession_number, report.study_instance_uid) == ("ACC0042", UID)
    assert report.message_key == "HOSP|DRAFT01"
    assert report.signed_at == datetime(2025, 1, 2, 4, 0, tzinfo=UTC)


def test_the_accession_falls_back_to_obr_3_and_the_uid_to_zds():
    message = segments_replaced(oru(), "OBR", 18, "")
    message = segments_replaced(message, "OBR", 3, "FILL42^RIS")
    message = message.replace(b"\rOBX|1|HD|", b"\rOBX|1|XX|") + f"ZDS|{UID}^RIS^Application^DICOM\r".encode()
    report = read_message(message).report
    assert report.accession_number == "FILL42" and report.parsed["accession_field"] == "OBR-3"
    assert report.study_instance_uid == UID and report.parsed["study_uid_field"] == "ZDS-1"
    too_long = segments_replaced(oru(), "OBR", 18, "A" * 17)  # not a DICOM accession: OBR-3 next
    assert read_message(too_long).report.accession_number == "ACC77"


def test_a_report_with_neither_accession_nor_uid_is_refused_ar():
    refusal = refused(oru(accession=None, study_uid=None))
    assert refusal.code is AckCode.REJECT and refusal.condition is Condition.REQUIRED_FIELD_MISSING
    assert "cannot be matched to a study" in refusal.reason
    assert read_message(oru(accession=None)).report.study_instance_uid == UID
    assert read_message(oru(study_uid="not-a-uid")).report.study_instance_uid is None


def test_a_report_without_text_is_refused_ar():
    refusal = refused(oru(findings="", impression=""))
    assert refusal.code is AckCode.REJECT and "no report text" in refusal.reason


@pytest.mark.parametrize(
    ("field", "value", "condition", "words"),
    [
        (9, "ADT^A08^ADT_A01", Condition.UNSUPPORTED_MESSAGE_TYPE, "ADT^A08 is not accepted"),
        (9, "ORU^R30", Condition.UNSUPPORTED_EVENT_CODE, "ORU^R30 is not accepted"),
        (11, "T", Condition.UNSUPPORTED_PROCESSING_ID, "processing id T"),
        (12, "9.9", Condition.UNSUPPORTED_VERSION_ID, "HL7 version 9.9"),
        (10, "", Condition.REQUIRED_FIELD_MISSING, "MSH-10"),
    ],
)
def test_what_the_listener_does_not_take_is_refused_ar(field, value, condition, words):
    refusal = refused(segments_replaced(oru(), "MSH", field, value))
    assert (refusal.code, refusal.condition) == (AckCode.REJECT, condition)
    assert words in refusal.reason


def test_a_facility_not_admitted_is_refused_ar():
    reading = read_message(oru(facility="OTHER"), admits=lambda facility: facility == "RADRIS")
    assert (
        reading.refusal.code is AckCode.REJECT and "'OTHER' (MSH-4) is not allowed" in reading.refusal.reason
    )
    assert read_message(oru(), admits=lambda facility: facility == "RADRIS").report is not None


@pytest.mark.parametrize(
    ("payload", "words", "control_id"),
    [
        (b"hello, this is not HL7", "no MSH segment", None),
        (b"", "no MSH segment", None),
        (oru().replace(b"\rPID|", b"\rQQQ|"), "cannot parse the message (InvalidName", "MSG0001"),
        (oru().replace(b"Heart", b"H\xffart"), "not valid utf-8 text", "MSG0001"),
    ],
)
def test_a_message_that_cannot_be_read_is_answered_ae_naming_it_when_possible(payload, words, control_id):
    reading = read_message(payload)
    assert reading.refusal.code is AckCode.ERROR and words in reading.refusal.reason
    assert (reading.header.control_id if reading.header else None) == control_id


def test_the_declared_character_set_and_ft_formatting_are_honoured():
    message = segments_replaced(oru(findings="Cœur normal."), "MSH", 18, "8859/15")
    report = read_message(message.decode().encode("iso8859-15")).report
    assert report.findings == "Cœur normal."
    formatted = (
        oru()
        .replace(b"TX|18782-3", b"FT|18782-3")
        .replace(b"Heart size is normal.", b"Heart\\.br\\size\\.sp\\is\\.in+4\\ normal.")
    )
    assert read_message(formatted).report.findings.splitlines()[:3] == ["Heart", "size", "is normal."]


def test_other_encoding_characters_are_read_with_their_own_escape():
    message = oru(findings="A | B").decode().replace("|", "!")  # ! as the field separator
    message = message.replace("MSH!^~\\&!", "MSH!^~#&!").replace("\\F\\", "|").replace("\\", "#")
    report = read_message(message.encode()).report
    assert report is not None and report.findings == "A | B"


@pytest.mark.parametrize(
    ("text", "findings", "impression"),
    [
        ("FINDINGS: Heart normal. IMPRESSION: Normal.", "Heart normal.", "Normal."),
        ("Impression: Normal.\nFindings: Heart normal.", "Heart normal.", "Normal."),
        (
            "TECHNIQUE: PA.\nfindings:\n Heart normal.\nCOMPARISON: none.\nConclusion: Normal.",
            "Heart normal.",
            "Normal.",
        ),
        ("Heart normal.\nIMPRESSION: Normal.", "Heart normal.", "Normal."),
        ("Heart normal, no effusion.", "Heart normal, no effusion.", ""),
        ("The impression: of the heart is normal.", "The impression: of the heart is normal.", ""),
    ],
)
def test_sections_are_cut_at_their_headings(text, findings, impression):
    assert split_sections(text) == (findings, impression)
