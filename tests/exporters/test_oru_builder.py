"""build_oru: segments and fields, read back by a second library (python-hl7), escaping, refusals."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from exporters.identity import ModelIdentity, StudyInfo
from exporters.oru import build_oru, encode_er7, new_control_id

NOW = datetime(2025, 1, 2, 4, 0, 0, tzinfo=UTC)
FINDINGS = "Heart size is normal.\nNo pleural effusion."
IMPRESSION = "No acute cardiopulmonary process."
APPLICATIONS = {
    "sending_app": "ECHO",
    "sending_facility": "GENERAL",
    "receiving_app": "RIS",
    "receiving_facility": "GENERAL",
}


def oru_bytes(
    study: StudyInfo, model: ModelIdentity, findings: str = FINDINGS, impression: str = IMPRESSION
) -> bytes:
    message = build_oru(study, findings, impression, model, control_id="CTRL0001", now=NOW, **APPLICATIONS)
    return encode_er7(message)


def parse(raw: bytes) -> hl7.Message:
    return hl7.parse(raw.decode("utf-8"))


def field(message: hl7.Message, segment: str, number: int) -> str:
    return str(message.segment(segment)[number])


def test_header_says_oru_r01_v251_production_with_our_control_id(
    study: StudyInfo, model: ModelIdentity
) -> None:
    message = parse(oru_bytes(study, model))

    assert [str(segment[0]) for segment in message] == [
        "MSH",
        "PID",
        "ORC",
        "OBR",
        "OBX",
        "OBX",
        "OBX",
        "OBX",
    ]
    assert field(message, "MSH", 9) == "ORU^R01^ORU_R01"
    assert field(message, "MSH", 10) == "CTRL0001"
    assert field(message, "MSH", 11) == "P"
    assert field(message, "MSH", 12) == "2.5.1"
    assert [field(message, "MSH", n) for n in (3, 4, 5, 6)] == ["ECHO", "GENERAL", "RIS", "GENERAL"]
    assert field(message, "MSH", 7) == "20250102040000+0000"
    assert field(message, "MSH", 18) == "UNICODE UTF-8"


def test_patient_order_and_request_fields(study: StudyInfo, model: ModelIdentity) -> None:
    message = parse(oru_bytes(dataclasses.replace(study, patient_id_issuer="GENERAL"), model))

    assert field(message, "PID", 3) == "MRN0042^^^GENERAL^MR"
    assert field(message, "PID", 5) == "Doe^Jane"
    assert (field(message, "PID", 7), field(message, "PID", 8)) == ("19700101", "F")
    assert [field(message, "ORC", n) for n in (1, 2, 3)] == ["RE", "PL-7", "FI-7"]
    assert [field(message, "OBR", n) for n in (2, 3, 4)] == ["PL-7", "FI-7", "36554-4^XR Chest PA^LN"]
    assert field(message, "OBR", 7) == "20250102030405"
    assert field(message, "OBR", 18) == "ACC0042"
    assert (field(message, "OBR", 24), field(message, "OBR", 25)) == ("RAD", "P")


def test_one_tx_obx_per_line_with_section_code_sub_id_preliminary_status_and_the_model(
    study: StudyInfo, model: ModelIdentity
) -> None:
    message = parse(oru_bytes(study, model))

    rows = [
        (str(obx[1]), str(obx[2]), str(obx[3]), str(obx[4]), message.unescape(str(obx[5])), str(obx[11]))
        for obx in message.segments("OBX")
    ]
    assert rows == [
        ("1", "HD", "113014^DICOM Study^DCM", "", study.study_instance_uid, "P"),
        ("2", "TX", "59776-5^Procedure findings^LN", "1", "Heart size is normal.", "P"),
        ("3", "TX", "59776-5^Procedure findings^LN", "2", "No pleural effusion.", "P"),
        ("4", "TX", "19005-8^Impression^LN", "1", IMPRESSION, "P"),
    ]
    for obx in message.segments("OBX"):
        assert str(obx[18]) == f"echo-student 1.2.0^^{model.uid}^ISO"


def test_hl7apy_reparses_the_wire_form_strictly(study: StudyInfo, model: ModelIdentity) -> None:
    raw = oru_bytes(study, model).decode("utf-8")

    again = parse_message(raw, validation_level=VALIDATION_LEVEL.STRICT)
    again.validate()

    assert again.msh.msh_10.value == "CTRL0001"


def test_delimiters_backslashes_and_line_breaks_survive_the_round_trip(
    study: StudyInfo, model: ModelIdentity
) -> None:
    findings = (
        "Pipe | caret ^ amp & tilde ~ back \\ slash.\nLiteral \\F\\ and \\.br\\ stay text.\r\nC:\\Hx\\N"
    )
    impression = "A ~ B ^ C"
    raw = oru_bytes(dataclasses.replace(study, accession_number="ACC|^&~\\1"), model, findings, impression)
    message = parse(raw)

    texts = [message.unescape(str(obx[5])) for obx in message.segments("OBX")[1:]]
    assert texts == findings.splitlines() + [impression]
    assert message.unescape(field(message, "OBR", 18)) == "ACC|^&~\\1"
    assert b"\\F\\" in raw and b"\\E\\F\\E\\" in raw  # escaped, and a literal \F\ escaped as text


def test_dicom_person_name_becomes_xpn_with_suffix_before_prefix(
    study: StudyInfo, model: ModelIdentity
) -> None:
    cases = {
        "Doe^Jane^Q^Dr^Jr": "Doe^Jane^Q^Jr^Dr",
        "Yamada^Tarou=山田^太郎=やまだ^たろう": "Yamada^Tarou",
        "Müller^Jörg": "Müller^Jörg",
        "": '""',
    }
    for dicom_name, xpn in cases.items():
        message = parse(oru_bytes(dataclasses.replace(study, patient_name=dicom_name), model))
        assert field(message, "PID", 5) == xpn


def test_unknown_sex_and_birth_date_and_order_numbers_are_left_out(
    study: StudyInfo, model: ModelIdentity
) -> None:
    sparse = dataclasses.replace(
        study, sex="", birth_date="", placer_order_number=None, filler_order_number=None
    )

    message = parse(oru_bytes(sparse, model))

    assert (field(message, "PID", 7), field(message, "PID", 8)) == ("", "U")
    assert [field(message, "ORC", n) for n in (2, 3)] == ["", ""]
    assert [field(message, "OBR", n) for n in (2, 3)] == ["", ""]


def test_procedure_from_description_or_local_code(study: StudyInfo, model: ModelIdentity) -> None:
    text_only = dataclasses.replace(study, procedure_code=None, procedure_coding_scheme=None)
    local = dataclasses.replace(study, procedure_coding_scheme=None)

    assert field(parse(oru_bytes(text_only, model)), "OBR", 4) == "^XR Chest PA"
    assert field(parse(oru_bytes(local, model)), "OBR", 4) == "36554-4^XR Chest PA^L"


def test_an_empty_impression_sends_findings_only(study: StudyInfo, model: ModelIdentity) -> None:
    message = parse(oru_bytes(study, model, impression=""))

    assert [str(obx[3]) for obx in message.segments("OBX")] == [
        "113014^DICOM Study^DCM",
        "59776-5^Procedure findings^LN",
        "59776-5^Procedure findings^LN",
    ]


def test_encode_er7_ends_every_segment_with_cr_in_utf8(study: StudyInfo, model: ModelIdentity) -> None:
    raw = oru_bytes(dataclasses.replace(study, patient_name="Müller^Jörg"), model)

    assert raw.endswith(b"\r") and b"\n" not in raw
    assert raw.count(b"\r") == 8
    assert "Müller^Jörg".encode() in raw


def test_control_ids_are_short_safe_and_unique() -> None:
    ids = {new_control_id() for _ in range(2000)}

    assert len(ids) == 2000
    assert all(re.fullmatch(r"\d{12}[0-9a-f]{8}", control_id) for control_id in ids)


@pytest.mark.parametrize(
    ("change", "text", "options", "error", "message"),
    [
        ({"accession_number": ""}, {}, {}, ValueError, "study.accession_number is required"),
        ({"patient_id": " "}, {}, {}, ValueError, "study.patient_id is required"),
        ({"study_instance_uid": ""}, {}, {}, ValueError, "study.study_instance_uid is required"),
        ({"procedure_code": None, "procedure_description": None}, {}, {}, ValueError, r"study.procedure_code or study.procedure_description is required \(OBR-4\)"),
        ({"accession_number": "ACC\n42"}, {}, {}, ValueError, "study.accession_number contains a line break"),
        ({"accession_number": "A" * 200}, {}, {}, ValueError, "study.accession_number is 200 characters once escaped, more than the 199 OBR-18 can carry; an identifier is never truncated"),
        ({"patient_id": "P|" * 70}, {}, {}, ValueError, "study.patient_id is 280 characters once escaped, more than the 199 PID-3.1 can carry"),
        ({"birth_date": 19700101}, {}, {}, TypeError, "study.birth_date must be a string, got int"),
        ({}, {"findings": "", "impression": " \n "}, {}, ValueError, "findings and impression are both empty"),
        ({}, {"impression": 42}, {}, TypeError, "impression must be a string"),
        ({}, {}, {"control_id": ""}, ValueError, "control_id must be 1-20 characters"),
        ({}, {}, {"control_id": "A" * 21}, ValueError, "control_id must be 1-20 characters"),
        ({}, {}, {"control_id": "BAD|ID"}, ValueError, "control_id must be 1-20 characters"),
        ({}, {}, {"sending_app": "EC^HO"}, ValueError, "sending_app must be 1-20 characters without HL7 delimiters"),
        ({}, {}, {"receiving_facility": ""}, ValueError, "receiving_facility must be 1-20 characters"),
        ({}, {}, {"now": "2025-01-02"}, TypeError, "now must be a datetime"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_argument(
    change: dict, text: dict, options: dict, error: type, message: str, study: StudyInfo, model: ModelIdentity
) -> None:
    arguments = {"control_id": "CTRL0001", "now": NOW, **APPLICATIONS, **options}
    sections = {"findings": FINDINGS, "impression": IMPRESSION, **text}

    with pytest.raises(error, match=message):
        build_oru(dataclasses.replace(study, **change), model=model, **sections, **arguments)


def test_study_and_model_types_are_checked(study: StudyInfo, model: ModelIdentity) -> None:
    arguments = {"control_id": "CTRL0001", "now": NOW, **APPLICATIONS}

    with pytest.raises(TypeError, match="study must be a StudyInfo"):
        build_oru({"patient_id": "1"}, FINDINGS, IMPRESSION, model, **arguments)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model must be a ModelIdentity"):
        build_oru(study, FINDINGS, IMPRESSION, "echo", **arguments)  # type: ignore[arg-type]


def test_a_long_generated_line_is_wrapped_into_several_obx_within_the_tx_limit(
    study: StudyInfo, model: ModelIdentity
) -> None:
    """Generated drafts can be one 300-character line; strict v2.5.1 caps OBX-5 at 199 characters."""
    sentence = "No pleural effusion | no pneumothorax & the cardiac silhouette is normal in size. "
    long_line = (sentence * 4).strip()
    raw = build_oru(study, long_line, IMPRESSION, model, control_id="CTRL0002", now=NOW, **APPLICATIONS)
    wire = encode_er7(raw).decode("utf-8")
    again = parse_message(wire, validation_level=VALIDATION_LEVEL.STRICT)
    again.validate()
    findings = [s for s in parse(encode_er7(raw)).segments("OBX") if str(s[3]).startswith("59776-5")]
    assert len(findings) > 1 and all(len(str(s[5])) <= 199 for s in findings)
    assert [str(s[4]) for s in findings] == [str(n) for n in range(1, len(findings) + 1)]
    text = " ".join(str(s[5]) for s in findings).replace("\\F\\", "|").replace("\\T\\", "&")
    assert text == long_line


# --- a corrected draft (the study drafted again from its frontal view) ----------------------------


def test_a_corrected_draft_says_c_in_obr_25_and_every_obx_11(study: StudyInfo, model: ModelIdentity) -> None:
    message = build_oru(
        study, FINDINGS, IMPRESSION, model, control_id="CTRL0002", now=NOW, result_status="C", **APPLICATIONS
    )
    raw = encode_er7(message)
    parsed = parse(raw)

    assert field(parsed, "OBR", 25) == "C"
    assert [str(obx[11]) for obx in parsed.segments("OBX")] == ["C", "C", "C", "C"]
    assert field(parsed, "MSH", 10) == "CTRL0002"
    assert field(parsed, "OBR", 18) == study.accession_number
    # still valid v2.5.1 for the strict parser that reads it back
    again = parse_message(raw.decode("utf-8"), validation_level=VALIDATION_LEVEL.STRICT)
    again.validate()
    assert again.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.value == "C"


def test_a_draft_is_p_unless_asked(study: StudyInfo, model: ModelIdentity) -> None:
    parsed = parse(oru_bytes(study, model))
    assert field(parsed, "OBR", 25) == "P"
    assert {str(obx[11]) for obx in parsed.segments("OBX")} == {"P"}


@pytest.mark.parametrize("status", ["F", "c", "", None, "CP"])
def test_a_result_status_other_than_p_or_c_is_refused(
    status: object, study: StudyInfo, model: ModelIdentity
) -> None:
    with pytest.raises(ValueError, match=r"result_status must be P \(draft\) or C \(corrected draft\)"):
        build_oru(
            study,
            FINDINGS,
            IMPRESSION,
            model,
            control_id="CTRL0001",
            now=NOW,
            result_status=status,
            **APPLICATIONS,
        )


def test_every_obx_names_the_decoding_in_obx_17_when_it_is_known(
    study: StudyInfo, model: ModelIdentity
) -> None:
    plain = parse(oru_bytes(study, model))
    assert all(str(obx[17]) == "" for obx in plain.segments("OBX"))
    decoded = dataclasses.replace(model, decoding="multistep steps=8 tau=0.85")
    raw = encode_er7(
        build_oru(study, FINDINGS, IMPRESSION, decoded, control_id="CTRL0003", now=NOW, **APPLICATIONS)
    )
    parsed = parse(raw)
    assert {str(obx[17]) for obx in parsed.segments("OBX")} == {"DECODING^multistep steps=8 tau=0.85^99ECHO"}
    parse_message(raw.decode("utf-8"), validation_level=VALIDATION_LEVEL.STRICT).validate()
    with pytest.raises(ValueError, match="decoding"):
        dataclasses.replace(model, decoding="x" * 65)
