"""The FHIR DiagnosticReport through the outbox: to a real FHIR server (Medplum's router, see
tests/exporters/fhir_server.py) with the token from ECHO_FHIR_TOKEN_FILE, or into a folder; retried
while the server is away, failed for a refusal, and one report per study however often it is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporters.fhir_client import FhirOutcome
from exporters.outcome import SendStatus
from node.store.database import Database
from node.store.states import DeliveryKind, DeliveryStatus, StudyState
from tests.node.conftest import free_port
from tests.worker.test_outbox import RecordingRis, deliveries, outbox, study_state

pytest_plugins = ["tests.exporters.fhir_server"]  # the session's FHIR server


@pytest.fixture
def token_file(tmp_path: Path, fhir_server) -> Path:
    path = tmp_path / "fhir-token"
    path.write_text(f"{fhir_server.token}\n")
    return path


@pytest.mark.integration
def test_the_draft_reaches_the_fhir_server_once_however_often_it_is_sent(
    database: Database,
    node_settings,
    store_study,
    images,
    report_for,
    clock,
    engine,
    fhir_server,
    token_file,
) -> None:
    engine.findings = "The heart is enlarged. No pleural effusion."
    engine.impression = "Cardiomegaly."
    settings = node_settings(fhir=fhir_server.base_url, fhir_token_file=token_file)
    image = images.chest(accession="ACC-FHIR-1")
    study_id = store_study(image)
    report_id = report_for(study_id, settings)

    tick = outbox(database, settings, clock).run_due()

    row = deliveries(database)[(report_id, DeliveryKind.FHIR)]
    assert tick.delivered == [row.id] and (row.status, row.ack_code) == (DeliveryStatus.DELIVERED, "200")
    assert study_state(database, study_id)[0] is StudyState.DELIVERED
    [report] = fhir_server.search("DiagnosticReport", identifier="ACC-FHIR-1")
    assert report["status"] == "preliminary" and report["conclusion"].endswith("Cardiomegaly.")
    codes = {
        obs["code"]["coding"][0]["display"]: obs["valueCodeableConcept"]["coding"][0]["display"]
        for obs in report["contained"]
    }
    assert codes == {"Cardiomegaly": "Present", "Pleural effusion": "Absent"}

    with database.sessions.begin() as session:  # an operator's resend: the same report again
        session.get_one(type(row), row.id).status = DeliveryStatus.PENDING
        session.get_one(type(row), row.id).next_attempt_at = clock.now()
    clock.advance(1)
    assert outbox(database, settings, clock).run_due().delivered == [row.id]
    assert len(fhir_server.search("DiagnosticReport", identifier="ACC-FHIR-1")) == 1


@pytest.mark.integration
def test_a_wrong_token_fails_with_the_server_s_reason_and_a_missing_server_is_retried(
    database: Database,
    node_settings,
    store_study,
    images,
    report_for,
    clock,
    fhir_server,
    tmp_path,
) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token")
    settings = node_settings(fhir=fhir_server.base_url, fhir_token_file=wrong, delivery_max_attempts=5)
    report_id = report_for(store_study(images.chest()), settings)
    outbox(database, settings, clock).run_due()
    row = deliveries(database)[(report_id, DeliveryKind.FHIR)]
    assert (row.status, row.ack_code) == (DeliveryStatus.FAILED, "401")
    assert "401" in (row.last_error or "")

    settings = node_settings(fhir=f"http://127.0.0.1:{free_port()}/fhir/R4", delivery_max_attempts=5)
    report_id = report_for(store_study(images.chest()), settings)
    outbox(database, settings, clock).run_due()
    row = deliveries(database)[(report_id, DeliveryKind.FHIR)]
    assert row.status is DeliveryStatus.RETRYING and "127.0.0.1" in (row.last_error or "")


def test_a_folder_gets_one_file_per_study_and_the_study_is_delivered(
    database: Database, node_settings, store_study, images, report_for, clock, tmp_path
) -> None:
    folder = tmp_path / "fhir-out"
    folder.mkdir()
    settings = node_settings(fhir=str(folder), ris="127.0.0.1:2575")
    study_id = store_study(images.chest())
    report_id = report_for(study_id, settings)

    outbox(database, settings, clock, ris=RecordingRis()).run_due()

    [written] = folder.iterdir()
    bundle = json.loads(written.read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    assert deliveries(database)[(report_id, DeliveryKind.FHIR)].status is DeliveryStatus.DELIVERED
    assert study_state(database, study_id)[0] is StudyState.DELIVERED


def test_the_token_file_is_read_at_each_send_and_an_empty_one_is_retried(
    database: Database, node_settings, store_study, images, report_for, clock, tmp_path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    sent: list[str | None] = []

    def server(bundle, base_url, *, token, ca_file, timeout) -> FhirOutcome:
        sent.append(token)
        return FhirOutcome(SendStatus.DELIVERED, http_status=200)

    settings = node_settings(fhir="https://fhir.example.org/R4", fhir_token_file=token)
    report_for(store_study(images.chest()), settings)
    outbox(database, settings, clock, send_fhir=server).run_due()
    token.write_text("rotated")
    report_for(store_study(images.chest()), settings)
    outbox(database, settings, clock, send_fhir=server).run_due()
    token.write_text("")
    report_id = report_for(store_study(images.chest()), settings)
    outbox(database, settings, clock, send_fhir=server).run_due()

    assert sent == ["first", "rotated"]
    row = deliveries(database)[(report_id, DeliveryKind.FHIR)]
    assert row.status is DeliveryStatus.RETRYING and "is empty" in (row.last_error or "")
