"""build_diagnostic_report: the Bundle's resources and fields, fhir.resources validation, refusals."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from fhir.resources.R4B.bundle import Bundle

from echo.findings import Label
from exporters.air_codes import FINDING_CODES
from exporters.fhir import DEFAULT_NODE_SYSTEM, build_diagnostic_report, report_key
from exporters.identity import ModelIdentity, StudyInfo
from exporters.readings import FindingReading, draft_readings

ISSUED = datetime(2025, 1, 2, 4, 0, tzinfo=UTC)
FINDINGS = (
    "Small left pleural effusion. Consolidation in the right lower lobe. No pneumothorax. Possible edema."
)
IMPRESSION = "Left pleural effusion.\nRight lower lobe consolidation."
SNOMED = "http://snomed.info/sct"


@pytest.fixture
def decoded_model(model: ModelIdentity) -> ModelIdentity:
    return dataclasses.replace(model, decoding="multistep steps=8 tau=0.85")


def build(study: StudyInfo, model: ModelIdentity, **overrides) -> Bundle:
    arguments = {
        "findings": FINDINGS,
        "impression": IMPRESSION,
        "readings": draft_readings(FINDINGS, IMPRESSION),
        "issued": ISSUED,
    }
    arguments.update(overrides)
    return build_diagnostic_report(
        study,
        arguments.pop("findings"),
        arguments.pop("impression"),
        arguments.pop("readings"),
        model,
        **arguments,
    )


def resources(bundle: Bundle) -> dict[str, object]:
    return {entry.resource.get_resource_type(): entry.resource for entry in bundle.entry}


def test_bundle_is_a_transaction_of_conditional_updates(study, decoded_model):
    bundle = build(study, decoded_model)
    assert bundle.type == "transaction"
    requests = [
        (entry.resource.get_resource_type(), entry.request.method, entry.request.url)
        for entry in bundle.entry
    ]
    node_key = f"{DEFAULT_NODE_SYSTEM}|{study.study_instance_uid}"
    assert requests == [
        ("Device", "PUT", f"Device?identifier=urn:dicom:uid|urn:oid:{decoded_model.uid}"),
        ("DiagnosticReport", "PUT", f"DiagnosticReport?identifier={node_key}"),
        ("Provenance", "PUT", f"Provenance?_tag={node_key}"),
    ]
    assert all(entry.fullUrl.startswith("urn:uuid:") for entry in bundle.entry)


def test_report_fields(study, decoded_model):
    report = resources(build(study, decoded_model))["DiagnosticReport"]
    assert report.status == "preliminary"
    assert [(c.system, c.code) for c in report.code.coding] == [("http://loinc.org", "18748-4")]
    assert {c.code for c in report.category[0].coding} == {"LP29684-5", "RAD"}
    assert report.conclusion == "Left pleural effusion.\nRight lower lobe consolidation."
    assert report.issued == ISSUED
    assert report.meta.security[0].code == "AIAST"
    node, accession = report.identifier
    assert (node.system, node.value, node.use) == (DEFAULT_NODE_SYSTEM, study.study_instance_uid, "official")
    assert (accession.type.coding[0].code, accession.value) == ("ACSN", "ACC0042")
    study_reference = report.imagingStudy[0]
    assert study_reference.type == "ImagingStudy"
    assert (study_reference.identifier.system, study_reference.identifier.value) == (
        "urn:dicom:uid",
        f"urn:oid:{study.study_instance_uid}",
    )
    assert [(order.identifier.type.coding[0].code, order.identifier.value) for order in report.basedOn] == [
        ("PLAC", "PL-7"),
        ("FILL", "FI-7"),
    ]


def presented_text(bundle: Bundle) -> str:
    """The report's text as it goes on the wire: base64 in the JSON, decoded."""
    report = json.loads(bundle.model_dump_json())["entry"][1]["resource"]
    return base64.b64decode(report["presentedForm"][0]["data"], validate=True).decode("utf-8")


def test_presented_form_is_the_whole_text(study, decoded_model):
    bundle = build(study, decoded_model, language="en-GB")
    form = resources(bundle)["DiagnosticReport"].presentedForm[0]
    assert form.contentType == "text/plain; charset=utf-8"
    assert form.language == "en-GB"
    assert presented_text(bundle) == (
        f"FINDINGS:\n{FINDINGS}\n\nIMPRESSION:\nLeft pleural effusion.\nRight lower lobe consolidation.\n"
    )


def test_a_draft_without_impression_has_no_conclusion(study, decoded_model):
    bundle = build(study, decoded_model, impression="  ")
    assert resources(bundle)["DiagnosticReport"].conclusion is None
    assert presented_text(bundle) == f"FINDINGS:\n{FINDINGS}\n"


def test_subject_is_the_patient_by_identifier_only(study, decoded_model):
    with_issuer = dataclasses.replace(study, patient_id_issuer="HOSP")
    subject = resources(build(with_issuer, decoded_model))["DiagnosticReport"].subject
    assert subject.reference is None and subject.type == "Patient"
    assert subject.identifier.value == "MRN0042"
    assert subject.identifier.type.coding[0].code == "MR"
    assert subject.identifier.assigner.display == "HOSP"
    assert subject.identifier.system is None  # "HOSP" is no URI
    as_oid = dataclasses.replace(study, patient_id_issuer="1.2.3.4")
    assert (
        resources(build(as_oid, decoded_model))["DiagnosticReport"].subject.identifier.system
        == "urn:oid:1.2.3.4"
    )
    assert "Doe" not in build(study, decoded_model).model_dump_json()  # no name, birth date or sex is sent
    assert "19700101" not in build(study, decoded_model).model_dump_json()


def test_one_contained_observation_per_reading(study, decoded_model):
    report = resources(build(study, decoded_model))["DiagnosticReport"]
    device_url = build(study, decoded_model).entry[0].fullUrl
    by_code = {item.code.coding[0].code: item for item in report.contained}
    assert [reference.reference for reference in report.result] == [
        f"#{item.id}" for item in report.contained
    ]
    assert set(by_code) == {
        FINDING_CODES[name].value for name in ("pleural_effusion", "pneumothorax", "consolidation", "edema")
    }
    values = {code: item.valueCodeableConcept.coding[0] for code, item in by_code.items()}
    assert (values["60046008"].code, values["60046008"].display) == ("52101004", "Present")
    assert values["36118008"].display == "Absent"
    assert values["19242006"].display == "Undetermined"
    for item in report.contained:
        assert item.status == "preliminary"
        assert item.code.coding[0].system == SNOMED
        assert item.subject.identifier.value == "MRN0042"
        assert item.device.reference == device_url
        assert item.method.text == "decoding: multistep steps=8 tau=0.85"
        assert item.meta is None  # contained resources carry no meta (R4 dom-4, dom-5)


def test_body_site_carries_the_side_or_lobe(study, decoded_model):
    report = resources(build(study, decoded_model))["DiagnosticReport"]
    sites = {item.id: item.bodySite for item in report.contained}
    assert sites["pleural-effusion"].coding[0].code == "3120008:272741003=7771000"  # pleura, left
    assert sites["pleural-effusion"].text == "left pleura"
    assert sites["consolidation"].coding[0].code == "90572001:272741003=24028007"  # lower lobe, right
    assert sites["consolidation"].text == "right lower lobe"
    assert sites["pneumothorax"] is None and sites["edema"] is None


def test_no_readings_no_results(study, decoded_model):
    report = resources(build(study, decoded_model, readings=()))["DiagnosticReport"]
    assert report.contained is None and report.result is None


def test_device_and_provenance_name_the_model(study, decoded_model):
    bundle = build(study, decoded_model)
    found = resources(bundle)
    device, provenance = found["Device"], found["Provenance"]
    assert device.identifier[0].value == f"urn:oid:{decoded_model.uid}"
    assert (device.deviceName[0].name, device.version[0].value, device.manufacturer) == (
        "echo-student",
        "1.2.0",
        "ECHO Project",
    )
    assert provenance.target[0].reference == bundle.entry[1].fullUrl
    agent = provenance.agent[0]
    assert agent.type.coding[0].code == "author"
    assert agent.who.reference == bundle.entry[0].fullUrl
    assert provenance.activity.text == "drafted by echo-student 1.2.0, decoding: multistep steps=8 tau=0.85"
    assert (provenance.meta.tag[0].system, provenance.meta.tag[0].code) == (
        DEFAULT_NODE_SYSTEM,
        study.study_instance_uid,
    )


def test_effective_time_needs_a_zone(study, decoded_model):
    naive = resources(build(study, decoded_model))["DiagnosticReport"]
    assert naive.effectiveDateTime == date(2025, 1, 2)  # the header's time has no zone: the date alone
    zone = timezone(timedelta(hours=1))
    zoned = resources(build(study, decoded_model, study_timezone=zone))["DiagnosticReport"]
    assert zoned.effectiveDateTime == datetime(2025, 1, 2, 3, 4, 5, tzinfo=zone)
    assert (
        '"effectiveDateTime":"2025-01-02T03:04:05+01:00"'
        in build(study, decoded_model, study_timezone=zone).model_dump_json()
    )
    unknown = dataclasses.replace(study, observation_datetime=None)
    assert resources(build(unknown, decoded_model))["DiagnosticReport"].effectiveDateTime is None


def test_fhir_resources_reads_back_what_it_wrote(study, decoded_model):
    bundle = build(study, decoded_model)
    again = Bundle.model_validate_json(bundle.model_dump_json())
    assert again.model_dump_json() == bundle.model_dump_json()
    assert again.entry[1].resource.contained[0].get_resource_type() == "Observation"


def test_a_superseding_draft_keeps_its_keys(study, decoded_model):
    first = build(study, decoded_model)
    later = build(
        study, decoded_model, findings="No pleural effusion.", impression="Normal chest.", readings=()
    )
    assert [(e.fullUrl, e.request.url) for e in later.entry] == [
        (e.fullUrl, e.request.url) for e in first.entry
    ]
    assert (
        first.model_dump_json() == build(study, decoded_model).model_dump_json()
    )  # the same draft, the same bytes
    other_study = build(dataclasses.replace(study, study_instance_uid="1.2.3.4.5"), decoded_model)
    assert other_study.entry[1].fullUrl != first.entry[1].fullUrl


def test_report_key_depends_on_node_and_study_only():
    assert report_key("urn:oid:1.2", "1.2.3") == report_key("urn:oid:1.2", "1.2.3")
    assert report_key("urn:oid:1.2", "1.2.3") != report_key("urn:oid:1.3", "1.2.3")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"study_instance_uid": ""}, "study_instance_uid is missing or not a valid DICOM UID"),
        ({"study_instance_uid": "1.2.03"}, "study_instance_uid is missing or not a valid DICOM UID"),
        ({"patient_id": "  "}, "patient_id is empty"),
    ],
)
def test_refuses_a_study_it_cannot_report(study, decoded_model, change, message):
    with pytest.raises(ValueError, match=message):
        build(dataclasses.replace(study, **change), decoded_model)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"findings": "", "impression": " \n"}, "both empty"),
        ({"issued": datetime(2025, 1, 2, 4, 0)}, "issued must be a timezone-aware datetime"),
        ({"status": "final"}, "status must be one of preliminary, partial"),
        ({"node_system": "not a uri"}, "node_system must be an absolute URI"),
        ({"node_system": "urn:x|y"}, "node_system must be an absolute URI"),
        ({"language": "english please"}, "language must be a BCP 47 tag"),
        (
            {"readings": (FindingReading("fracture", Label.POSITIVE),)},
            r"readings\[0\].finding 'fracture' is not a class",
        ),
        (
            {"readings": (FindingReading("edema", Label.POSITIVE), FindingReading("edema", Label.NEGATIVE))},
            r"readings\[1\] repeats edema",
        ),
        (
            {"readings": (FindingReading("nodule", Label.POSITIVE, side="up"),)},
            r"readings\[0\].side 'up' is not one nodule can have \(left, right\)",
        ),
        (
            {"readings": (FindingReading("consolidation", Label.POSITIVE, lobe="lingula"),)},
            r"readings\[0\].lobe 'lingula' is not one consolidation can have",
        ),
        ({"readings": (FindingReading("edema", "maybe"),)}, r"readings\[0\].label 'maybe' is not positive"),
    ],
)
def test_refuses_bad_arguments(study, decoded_model, overrides, message):
    with pytest.raises(ValueError, match=message):
        build(study, decoded_model, **overrides)


def test_refuses_wrong_types(study, decoded_model):
    with pytest.raises(TypeError, match="info must be a StudyInfo"):
        build({"patient_id": "x"}, decoded_model)
    with pytest.raises(TypeError, match="model must be a ModelIdentity"):
        build(study, "echo-student")
    with pytest.raises(TypeError, match="readings must be a sequence"):
        build(study, decoded_model, readings="edema")
    with pytest.raises(TypeError, match="study_timezone must be a tzinfo"):
        build(study, decoded_model, study_timezone="Europe/Berlin")
