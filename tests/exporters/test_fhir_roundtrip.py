"""send_fhir against a real FHIR R4 server (Medplum's FHIR router, tests/exporters/fhir_server.py).

Every test drafts its own study (a fresh Study Instance UID and accession), so the session's one
server needs no clearing between tests.
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from pydicom.uid import generate_uid

from exporters.fhir import DEFAULT_NODE_SYSTEM, build_diagnostic_report
from exporters.fhir_client import send_fhir
from exporters.identity import ModelIdentity, StudyInfo
from exporters.outcome import SendStatus
from exporters.readings import draft_readings
from tests.exporters.fhir_server import FhirServer, running_fhir_server

pytest_plugins = ["tests.exporters.fhir_server"]
pytestmark = pytest.mark.integration

FINDINGS = "Small left pleural effusion. No pneumothorax."
IMPRESSION = "Left pleural effusion."


@pytest.fixture
def fresh_study(study: StudyInfo) -> StudyInfo:
    uid = generate_uid()
    return dataclasses.replace(study, study_instance_uid=uid, accession_number=f"A{uid[-12:]}")


def draft(
    study: StudyInfo, model: ModelIdentity, findings: str = FINDINGS, impression: str = IMPRESSION
) -> Bundle:
    return build_diagnostic_report(
        study,
        findings,
        impression,
        draft_readings(findings, impression),
        model,
        issued=datetime.now(UTC),
    )


def send(bundle: Bundle, server: FhirServer, **overrides):
    arguments = {"token": server.token, "ca_file": server.ca_file, "timeout": 10.0, **overrides}
    return send_fhir(bundle, server.base_url, **arguments)


def reports_of(server: FhirServer, study: StudyInfo) -> list[dict]:
    """The server's DiagnosticReports for the study, found by its accession number."""
    return server.search("DiagnosticReport", identifier=study.accession_number)


def test_delivered_and_read_back_by_accession(fhir_server, fresh_study, model):
    outcome = send(draft(fresh_study, model), fhir_server)
    assert outcome.status is SendStatus.DELIVERED, outcome.error
    assert outcome.http_status == 200

    (report,) = reports_of(fhir_server, fresh_study)
    assert outcome.report_location.startswith(f"DiagnosticReport/{report['id']}")
    assert report["status"] == "preliminary"
    assert report["conclusion"] == IMPRESSION
    assert report["subject"]["identifier"]["value"] == fresh_study.patient_id
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert text == f"FINDINGS:\n{FINDINGS}\n\nIMPRESSION:\n{IMPRESSION}\n"
    findings = {item["code"]["coding"][0]["code"]: item for item in report["contained"]}
    assert findings["60046008"]["valueCodeableConcept"]["coding"][0]["display"] == "Present"
    assert findings["36118008"]["valueCodeableConcept"]["coding"][0]["display"] == "Absent"

    (device,) = fhir_server.search("Device", identifier=f"urn:dicom:uid|urn:oid:{model.uid}")
    assert findings["60046008"]["device"]["reference"] == f"Device/{device['id']}"
    (provenance,) = fhir_server.search(
        "Provenance", _tag=f"{DEFAULT_NODE_SYSTEM}|{fresh_study.study_instance_uid}"
    )
    assert provenance["target"][0]["reference"] == f"DiagnosticReport/{report['id']}"
    assert provenance["agent"][0]["who"]["reference"] == f"Device/{device['id']}"


def test_a_resend_leaves_one_report(fhir_server, fresh_study, model):
    bundle = draft(fresh_study, model)
    first = send(bundle, fhir_server)
    again = send(bundle, fhir_server)
    assert (first.status, again.status) == (SendStatus.DELIVERED, SendStatus.DELIVERED)
    (report,) = reports_of(fhir_server, fresh_study)
    assert first.report_location.split("/")[1] == again.report_location.split("/")[1] == report["id"]
    tag = f"{DEFAULT_NODE_SYSTEM}|{fresh_study.study_instance_uid}"
    assert len(fhir_server.search("Provenance", _tag=tag)) == 1


def test_a_superseding_draft_updates_the_report(fhir_server, fresh_study, model):
    first = send(draft(fresh_study, model), fhir_server)
    (before,) = reports_of(fhir_server, fresh_study)
    later = draft(
        fresh_study, model, findings="Lungs are clear. No pleural effusion.", impression="Normal chest."
    )
    assert send(later, fhir_server).status is SendStatus.DELIVERED

    (after,) = reports_of(fhir_server, fresh_study)
    assert after["id"] == before["id"] == first.report_location.split("/")[1]
    assert after["meta"]["versionId"] != before["meta"]["versionId"]
    assert after["conclusion"] == "Normal chest."
    readings = {
        item["code"]["coding"][0]["code"]: item["valueCodeableConcept"]["coding"][0]["display"]
        for item in after["contained"]
    }
    assert readings["60046008"] == "Absent"  # the effusion, now read as absent
    assert "36118008" not in readings  # the earlier draft's pneumothorax reading went with it
    assert len(after["result"]) == len(after["contained"])


def test_a_stopped_server_is_retried(fresh_study, model):
    with running_fhir_server() as server:
        assert send(draft(fresh_study, model), server).status is SendStatus.DELIVERED
    outcome = send(draft(fresh_study, model), server)
    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith("connection refused by 127.0.0.1:")


def test_a_refused_bundle_fails_with_the_servers_reason(fhir_server, fresh_study, model):
    # Someone filed a second report under this node's identifier for the study: the conditional
    # update cannot tell which to replace, and the server refuses the whole transaction.
    bundle = draft(fresh_study, model)
    report = bundle.entry[1].resource.model_dump(mode="json", exclude_none=True)
    report.pop("contained")
    report.pop("result")
    for _ in range(2):
        created = fhir_server.post("DiagnosticReport", report)
        assert created.status_code == 201, created.text

    outcome = send(bundle, fhir_server)
    assert outcome.status is SendStatus.FAILED
    assert outcome.http_status in (400, 412)
    assert "matched multiple resources" in outcome.error
    assert "\n" not in outcome.error


def test_the_token_goes_as_a_bearer_token(fhir_server, fresh_study, model):
    bundle = draft(fresh_study, model)
    for token in (None, "not-the-token"):
        outcome = send(bundle, fhir_server, token=token)
        assert outcome.status is SendStatus.FAILED
        assert outcome.http_status == 401
        assert outcome.error == "server refused the bundle: 401 Unauthorized: error/login Unauthorized"
    assert reports_of(fhir_server, fresh_study) == []
    assert send(bundle, fhir_server).status is SendStatus.DELIVERED  # the fixture's token


def test_tls_with_the_servers_ca(tls_fhir_server, fresh_study, model):
    outcome = send(draft(fresh_study, model), tls_fhir_server)
    assert outcome.status is SendStatus.DELIVERED, outcome.error
    assert len(reports_of(tls_fhir_server, fresh_study)) == 1


def test_tls_without_the_servers_ca_is_retried_naming_tls(tls_fhir_server, fresh_study, model):
    outcome = send(draft(fresh_study, model), tls_fhir_server, ca_file=None)  # the system's CAs
    assert outcome.status is SendStatus.RETRY
    assert "TLS handshake with 127.0.0.1:" in outcome.error
    assert "certificate not trusted" in outcome.error
