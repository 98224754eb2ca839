"""Issue 15 #4 and #17: one header value never freezes or loses the ORU.

Over-long descriptive fields are truncated to their HL7 v2.5.1 component length (an issuer of patient
id longer than HD.1's 20 characters used to raise hl7apy's MaxLengthReached out of build_oru);
invalid optional values (birth date, sex, study date and time) are repaired or dropped; identifiers
are never truncated, and one the ORU cannot carry is refused with a ValueError naming it. Every
message still parses with python-hl7 and with hl7apy's strict v2.5.1 validation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from pydicom import Dataset

from exporters.identity import ModelIdentity, StudyInfo, study_info_from_dataset
from exporters.oru import build_oru, encode_er7
from exporters.sanitize import sanitize_study_info

NOW = datetime(2025, 1, 2, 4, 0, 0, tzinfo=UTC)
FINDINGS = "Heart size is normal."
IMPRESSION = "No acute cardiopulmonary process."
APPLICATIONS = {
    "sending_app": "ECHO",
    "sending_facility": "GENERAL",
    "receiving_app": "RIS",
    "receiving_facility": "GENERAL",
}
MakeImage = Callable[..., Dataset]


def wire(study: StudyInfo, model: ModelIdentity) -> str:
    """The ORU as sent, after checking that both HL7 libraries read it (hl7apy strictly)."""
    message = build_oru(study, FINDINGS, IMPRESSION, model, control_id="CTRL0001", now=NOW, **APPLICATIONS)
    raw = encode_er7(message).decode("utf-8")
    parse_message(raw, validation_level=VALIDATION_LEVEL.STRICT).validate()
    hl7.parse(raw)
    return raw


def field(raw: str, segment: str, number: int) -> str:
    return str(hl7.parse(raw).segment(segment)[number])


# (StudyInfo field, value, (segment, field number), what goes on the wire, the notes)
CASES = [
    ("patient_id_issuer", "I" * 40, ("PID", 3), "MRN0042^^^" + "I" * 20 + "^MR",
     ["PID-3.4 assigning authority (HD.1): longer than the 20 characters HL7 v2.5.1 allows; truncated to 20"]),
    ("patient_id_issuer", "GENERAL|HOSPITAL^NORTH", ("PID", 3), "MRN0042^^^GENERAL\\F\\HOSPITAL^MR",
     ["PID-3.4 assigning authority (HD.1): longer than the 20 characters HL7 v2.5.1 allows; truncated to 20"]),
    ("birth_date", "19xx0101", ("PID", 7), "", ["PID-7 birth date: not a valid date (DA, YYYYMMDD); dropped"]),
    ("birth_date", "2023-13-45", ("PID", 7), "", ["PID-7 birth date: not a valid date (DA, YYYYMMDD); dropped"]),
    ("birth_date", "1970-01-31", ("PID", 7), "19700131",
     ["PID-7 birth date: a date written with separators; rewritten as YYYYMMDD"]),
    ("sex", "Male", ("PID", 8), "M", ["PID-8 sex: not one of the codes M, F or O; rewritten as the code"]),
    ("sex", "female", ("PID", 8), "F", ["PID-8 sex: not one of the codes M, F or O; rewritten as the code"]),
    ("sex", "X", ("PID", 8), "U", ["PID-8 sex: not one of the codes M, F or O; dropped (sent as U, unknown)"]),
    ("sex", "U", ("PID", 8), "U", []),
    ("patient_name", "O\\Brien^Pat", ("PID", 5), "O\\E\\Brien^Pat", []),
    ("patient_name", "Doe^Jane^Q^Dr^Jr^III", ("PID", 5), "Doe^Jane^Q^Jr III^Dr",
     ["PID-5 patient name: more than 5 name components; the extra ones joined to the fifth"]),
    ("patient_name", "D" * 60 + "^Jane", ("PID", 5), "D" * 50 + "^Jane",
     ["PID-5 family name (XPN.1): longer than the 50 characters HL7 v2.5.1 allows; truncated to 50"]),
    ("patient_name", "Doe^Ja\nne", ("PID", 5), "Doe^Ja ne",
     ["PID-5 patient name: control characters; replaced with spaces"]),
    ("observation_datetime", None, ("OBR", 7), "",
     ["OBR-7 observation time: the header has no valid study or acquisition date; left empty"]),
    ("placer_order_number", "PL\n7", ("ORC", 2), "",
     ["ORC-2/OBR-2 placer order number: contains a line break or control character; dropped (an identifier is never altered)"]),
    ("procedure_description", "X" * 250, ("OBR", 4), "36554-4^" + "X" * 199 + "^LN",
     ["OBR-4 procedure text (CE.2): longer than the 199 characters HL7 v2.5.1 allows; truncated to 199"]),
    ("procedure_code", "C\r1", ("OBR", 4), "^XR Chest PA",
     ["OBR-4 procedure code: contains a line break or control character; dropped with its coding scheme (a code is never altered), the procedure text kept"]),
    ("accession_number", "A" * 65, ("OBR", 18), "A" * 65, []),  # an identifier is sent whole
]  # fmt: skip
IDS = [f"{name}={str(value)[:12]!r}" for name, value, _, _, _ in CASES]


@pytest.mark.parametrize(("name", "value", "where", "sent", "notes"), CASES, ids=IDS)
def test_the_oru_is_built_with_the_value_repaired_truncated_or_dropped(
    name: str,
    value: object,
    where: tuple[str, int],
    sent: str,
    notes: list[str],
    study: StudyInfo,
    model: ModelIdentity,
) -> None:
    bad = dataclasses.replace(study, **{name: value})

    clean, said = sanitize_study_info(bad)
    raw = wire(bad, model)  # build_oru repairs on its own, without sanitize_study_info first

    assert field(raw, *where) == sent
    assert said == notes
    assert wire(clean, model) == raw
    if isinstance(value, str) and len(value) > 3:
        assert value not in " ".join(said)  # a note never quotes the header value


def test_an_issuer_longer_than_20_characters_no_longer_escapes_as_an_hl7apy_exception(
    study: StudyInfo, model: ModelIdentity
) -> None:
    """The reproduced defect: IssuerOfPatientID of 21+ characters raised MaxLengthReached."""
    try:
        raw = wire(dataclasses.replace(study, patient_id_issuer="SAINT MARY'S GENERAL HOSPITAL"), model)
    except HL7apyException as error:  # pragma: no cover - the defect
        pytest.fail(f"hl7apy exception escaped build_oru: {type(error).__name__}")
    assert field(raw, "PID", 3) == "MRN0042^^^SAINT MARY'S GENERAL^MR"


def test_without_an_observation_time_obx_14_is_left_out_too(study: StudyInfo, model: ModelIdentity) -> None:
    raw = wire(dataclasses.replace(study, observation_datetime=None), model)

    assert {str(obx[14]) for obx in hl7.parse(raw).segments("OBX")} == {""}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accession_number": "A" * 250}, r"study.accession_number is 250 characters once escaped, more than the 199 OBR-18 can carry; an identifier is never truncated"),
        ({"patient_id": "P" * 200}, r"study.patient_id is 200 characters once escaped, more than the 199 PID-3.1 can carry"),
        ({"patient_id": "MRN\n42"}, r"study.patient_id contains a line break or control character"),
        ({"procedure_code": "C\r1", "procedure_description": None}, r"study.procedure_code or study.procedure_description is required \(OBR-4\)"),
    ],
)  # fmt: skip
def test_an_identifier_the_oru_cannot_carry_is_refused_naming_it(
    change: dict, message: str, study: StudyInfo, model: ModelIdentity
) -> None:
    with pytest.raises(ValueError, match=message):
        build_oru(
            dataclasses.replace(study, **change),
            FINDINGS,
            IMPRESSION,
            model,
            control_id="CTRL0001",
            now=NOW,
            **APPLICATIONS,
        )


def test_sanitize_study_info_checks_types_and_leaves_a_valid_study_alone(study: StudyInfo) -> None:
    assert sanitize_study_info(study) == (study, [])
    with pytest.raises(TypeError, match="study must be a StudyInfo"):
        sanitize_study_info({"patient_id": "1"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="study.observation_datetime must be a datetime, got str"):
        sanitize_study_info(dataclasses.replace(study, observation_datetime="2025-01-02"))  # type: ignore[arg-type]


# --- from the image header, as the outbox builds it -----------------------------------------------


def test_a_study_date_that_is_garbage_leaves_obr_7_empty_instead_of_failing(
    make_received_image: MakeImage, model: ModelIdentity
) -> None:
    received = make_received_image(StudyDate="garbage")

    info = study_info_from_dataset(received)  # used to raise: DA('garbage')
    raw = wire(info, model)

    assert info.observation_datetime is None
    assert field(raw, "OBR", 7) == ""
    assert sanitize_study_info(info)[1] == [
        "OBR-7 observation time: the header has no valid study or acquisition date; left empty"
    ]


def test_a_garbage_study_date_falls_back_to_the_series_date(make_received_image: MakeImage) -> None:
    received = make_received_image(StudyDate="garbage", SeriesDate="20250103", SeriesTime="101500")

    assert study_info_from_dataset(received).observation_datetime == datetime(2025, 1, 3, 10, 15)


def test_a_study_time_that_is_no_time_keeps_the_study_date(make_received_image: MakeImage) -> None:
    received = make_received_image(StudyTime="25:61")

    assert study_info_from_dataset(received).observation_datetime == datetime(2025, 1, 2)


def test_a_study_time_with_colons_is_read(make_received_image: MakeImage) -> None:
    received = make_received_image(StudyTime="03:04:05")

    assert study_info_from_dataset(received).observation_datetime == datetime(2025, 1, 2, 3, 4, 5)


def test_a_name_with_a_backslash_reaches_pid_5_whole_not_as_a_python_list(
    make_received_image: MakeImage, model: ModelIdentity
) -> None:
    received = make_received_image(PatientName="O\\Brien^Pat")

    info = study_info_from_dataset(received)  # pydicom reads this as two values

    assert info.patient_name == "O\\Brien^Pat"
    assert hl7.parse(wire(info, model)).unescape(field(wire(info, model), "PID", 5)) == "O\\Brien^Pat"


def test_every_malformed_header_value_at_once_still_gives_an_oru(
    make_received_image: MakeImage, model: ModelIdentity
) -> None:
    received = make_received_image(
        PatientBirthDate="19xx0101",
        PatientSex="Male",
        StudyDate="garbage",
        StudyTime="25:61",
        PatientName="O\\Brien^Pat^Q^Dr^Jr^III",
        IssuerOfPatientID="I" * 40,
        AccessionNumber="A" * 65,
    )

    info, notes = sanitize_study_info(study_info_from_dataset(received))
    raw = wire(info, model)

    assert [note.split(":")[0] for note in notes] == [
        "PID-7 birth date",
        "PID-8 sex",
        "PID-5 patient name",
        "PID-3.4 assigning authority (HD.1)",
        "OBR-7 observation time",
    ]
    assert field(raw, "PID", 8) == "M" and field(raw, "OBR", 18) == "A" * 65
