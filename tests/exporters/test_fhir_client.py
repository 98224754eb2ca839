"""send_fhir's judgement of answers, its argument checks, and write_fhir's atomic file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from exporters.fhir import build_diagnostic_report
from exporters.fhir_client import outcome_of_response, send_fhir, write_fhir
from exporters.outcome import SendStatus
from exporters.readings import draft_readings

FINDINGS = "Small left pleural effusion."
IMPRESSION = "Left pleural effusion."


@pytest.fixture
def bundle(study, model) -> Bundle:
    return build_diagnostic_report(
        study,
        FINDINGS,
        IMPRESSION,
        draft_readings(FINDINGS, IMPRESSION),
        model,
        issued=datetime(2025, 1, 2, 4, 0, tzinfo=UTC),
    )


def answer(status: int, body: object | str, **headers: str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.Response(status, content=content.encode(), headers=headers)


def transaction_response(*statuses: str) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": status, "location": f"Thing/{index}/_history/1"}}
            for index, status in enumerate(statuses)
        ],
    }


def operation_outcome(text: str, expression: str | None = None) -> dict:
    issue = {"severity": "error", "code": "invalid", "details": {"text": text}}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def test_a_full_transaction_response_is_delivered(bundle):
    outcome = outcome_of_response(answer(200, transaction_response("201 Created", "200 OK", "201")), bundle)
    assert outcome.status is SendStatus.DELIVERED
    assert outcome.http_status == 200
    assert outcome.report_location == "Thing/1/_history/1"  # the DiagnosticReport's entry


@pytest.mark.parametrize(
    "body",
    [
        "<html>ok</html>",
        {"resourceType": "Bundle", "type": "batch-response", "entry": []},
        transaction_response("201", "201"),  # one entry short
        transaction_response("201", "400 Bad Request", "201"),
    ],
)
def test_a_2xx_that_is_no_full_transaction_response_is_retried(bundle, body):
    outcome = outcome_of_response(answer(200, body), bundle)
    assert outcome.status is SendStatus.RETRY
    assert outcome.error.startswith("malformed answer")


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_transient_statuses_are_retried(bundle, status):
    outcome = outcome_of_response(answer(status, operation_outcome("busy")), bundle)
    assert outcome.status is SendStatus.RETRY
    assert outcome.http_status == status
    assert outcome.error.endswith("error/invalid busy")


def test_a_refusal_fails_with_the_servers_reason_in_one_line(bundle):
    body = operation_outcome("Conditional PUT matched\nmultiple resources", "Bundle.entry[1].request.url")
    outcome = outcome_of_response(answer(412, body), bundle)
    assert outcome.status is SendStatus.FAILED
    assert outcome.error == (
        "server refused the bundle: 412 Precondition Failed: error/invalid Conditional PUT matched multiple "
        "resources at Bundle.entry[1].request.url"
    )


def test_the_reason_never_quotes_the_patient_identifier(bundle):
    outcome = outcome_of_response(answer(400, operation_outcome("unknown patient MRN0042")), bundle)
    assert outcome.status is SendStatus.FAILED
    assert "MRN0042" not in outcome.error
    assert outcome.error.endswith("unknown patient [patient id]")


def test_a_body_that_is_no_operation_outcome_is_left_out(bundle):
    outcome = outcome_of_response(answer(404, "<html>Not here: MRN0042</html>"), bundle)
    assert outcome.error == "server refused the bundle: 404 Not Found"


def test_a_redirect_fails_naming_the_target(bundle):
    outcome = outcome_of_response(answer(301, "", location="https://fhir.example/r4"), bundle)
    assert outcome.status is SendStatus.FAILED
    assert "to https://fhir.example/r4: set the FHIR base URL" in outcome.error


def test_connection_refused_is_retried(bundle, closed_port):
    outcome = send_fhir(bundle, f"http://127.0.0.1:{closed_port}/fhir", timeout=2)
    assert outcome.status is SendStatus.RETRY
    assert outcome.error == f"connection refused by 127.0.0.1:{closed_port}"
    assert outcome.http_status is None


def test_a_silent_server_is_retried_after_the_timeout(bundle, raw_peer):
    outcome = send_fhir(bundle, f"http://{raw_peer.host}:{raw_peer.port}/fhir", timeout=0.5)
    assert outcome.status is SendStatus.RETRY
    assert outcome.error == f"timeout: no answer from {raw_peer.host}:{raw_peer.port} within 0.5s"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"base_url": "fhir.example/r4"}, "base_url must be an http:// or https:// URL"),
        ({"base_url": "ftp://fhir.example/r4"}, "base_url must be an http:// or https:// URL"),
        ({"base_url": "https://fhir.example/r4?x=1"}, "without query"),
        ({"base_url": "https://user:pw@fhir.example/r4"}, "without query, fragment or credentials"),
        ({"token": "abc\r\nX-Evil: 1"}, "token must be a bearer token"),
        ({"token": "two words"}, "token must be a bearer token"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"ca_file": Path("ca.pem")}, "given for a plain http:// base URL"),
        (
            {"base_url": "https://127.0.0.1:1/fhir", "ca_file": Path("/nonexistent/ca.pem")},
            "cannot be loaded",
        ),
    ],
)
def test_send_refuses_bad_arguments(bundle, arguments, message):
    call = {"base_url": "http://127.0.0.1:1/fhir", "timeout": 1.0, **arguments}
    with pytest.raises(ValueError, match=message):
        send_fhir(bundle, call.pop("base_url"), **call)


def test_send_refuses_what_is_not_a_transaction(bundle):
    with pytest.raises(TypeError, match="bundle must be a fhir.resources Bundle"):
        send_fhir({"resourceType": "Bundle"}, "http://127.0.0.1:1/fhir", timeout=1)
    collection = bundle.model_copy(update={"type": "collection"})
    with pytest.raises(ValueError, match="must be a transaction Bundle"):
        send_fhir(collection, "http://127.0.0.1:1/fhir", timeout=1)
    without_report = bundle.model_copy(update={"entry": bundle.entry[:1]})
    with pytest.raises(ValueError, match="holds no DiagnosticReport"):
        write_fhir(without_report, Path("."))


def test_write_fhir_replaces_the_reports_file_atomically(bundle, tmp_path, study, model):
    outcome = write_fhir(bundle, tmp_path)
    assert outcome.status is SendStatus.DELIVERED
    written = Path(outcome.report_location)
    report_key = bundle.entry[1].fullUrl.removeprefix("urn:uuid:")
    assert written == tmp_path / f"DiagnosticReport-{report_key}.json"
    assert Bundle.model_validate_json(written.read_bytes()).model_dump_json() == bundle.model_dump_json()

    later = build_diagnostic_report(
        study, "No effusion.", "Normal chest.", (), model, issued=datetime(2025, 1, 3, tzinfo=UTC)
    )
    assert write_fhir(later, tmp_path).report_location == str(written)
    assert [path.name for path in tmp_path.iterdir()] == [written.name]  # replaced, no temporary left
    assert "Normal chest." in json.loads(written.read_text())["entry"][1]["resource"]["conclusion"]


def test_write_fhir_retries_a_missing_folder(bundle, tmp_path):
    outcome = write_fhir(bundle, tmp_path / "unmounted")
    assert outcome.status is SendStatus.RETRY
    assert "does not exist" in outcome.error
