"""/metrics reads the durable record; /healthz and /readyz answer as probes expect."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.observe.http import ObserveServer, Probes, registry_with
from node.observe.metrics import NodeCollector
from node.store.models import Delivery, ModelPromotion, ModelVersion, Report, Study
from node.store.states import DeliveryKind, DeliveryStatus, StudyState

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def fill(session) -> None:
    model = ModelVersion(name="m", version="v1", path="/m", sha256="0" * 64, block_size=8, created_at=NOW)
    session.add(model)
    retrained = {"path": "/r", "sha256": "1" * 64, "block_size": 8, "created_at": NOW}
    passed = ModelVersion(name="m", version="v2", role="serving", gate={"passed": True}, **retrained)
    failed = ModelVersion(name="m", version="v3", role="rejected", gate={"passed": False}, **retrained)
    session.add_all([passed, failed])
    session.flush()
    session.add(ModelPromotion(model_version_id=passed.id, previous_id=model.id, action="promote", at=NOW))
    for number, state in enumerate([StudyState.DELIVERED, StudyState.DELIVERED, StudyState.FAILED]):
        session.add(
            Study(
                study_instance_uid=f"1.2.{number}",
                state=state,
                first_received_at=NOW,
                last_received_at=NOW,
            )
        )
    session.flush()
    for study_id, seconds, decoding in ((1, 0.08, "onestep"), (2, 3.0, "multistep steps=8")):
        report = Report(
            study_id=study_id,
            model_version_id=model.id,
            findings="f",
            impression="i",
            text="t",
            tokens=64,
            forwards=8,
            seconds=seconds,
            created_at=NOW,
            decoding=decoding,
            gate="passed",
        )
        session.add(report)
        session.flush()
        session.add(
            Delivery(
                report_id=report.id,
                kind=DeliveryKind.ORU,
                target="ris:2575",
                message_id=f"C{study_id}",
                status=DeliveryStatus.PENDING if study_id == 2 else DeliveryStatus.DELIVERED,
                attempts=0,
                created_at=NOW - timedelta(minutes=5),
                updated_at=NOW,
            )
        )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def server(sqlite_db, tmp_path):
    with sqlite_db.sessions.begin() as session:
        fill(session)
    failing: dict[str, str | None] = {"broker": None}
    probes = Probes(
        registry_with(NodeCollector(sqlite_db.sessions, tmp_path, clock=lambda: NOW)),
        {"broker": lambda: failing["broker"]},
    )
    running = ObserveServer("127.0.0.1", 0, probes).start()
    running.failing = failing
    yield running
    running.stop()


def get(server, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_metrics_count_what_the_database_holds(server):
    status, body = get(server, "/metrics")
    assert status == 200
    found = samples(body)
    assert found[("echo_studies", (("state", "delivered"),))] == 2
    assert found[("echo_studies", (("state", "queued"),))] == 0  # every state, zero included
    assert found[("echo_draft_gate_decisions_total", (("decision", "passed"),))] == 2
    onestep = (("decoding", "onestep"), ("model_version", "v1"))
    assert found[("echo_inference_seconds_count", onestep)] == 1
    assert found[("echo_inference_seconds_bucket", (*onestep[:1], ("le", "0.1"), onestep[1]))] == 1
    slow = (("decoding", "multistep steps=8"), ("le", "2.5"), ("model_version", "v1"))
    assert found[("echo_inference_seconds_bucket", slow)] == 0
    assert found[("echo_draft_tokens_total", onestep)] / found[("echo_draft_forwards_total", onestep)] == 8
    assert found[("echo_deliveries", (("kind", "oru"), ("status", "pending")))] == 1
    assert found[("echo_outbox_oldest_waiting_seconds", ())] == 300
    assert found[("echo_spool_free_bytes", ())] > 0


def test_metrics_count_the_promotion_gate_and_the_registry(server):
    found = samples(get(server, "/metrics")[1])
    assert found[("echo_model_gate_decisions_total", (("decision", "passed"),))] == 1
    assert found[("echo_model_gate_decisions_total", (("decision", "failed"),))] == 1
    assert found[("echo_model_promotions_total", (("action", "promote"),))] == 1
    assert found[("echo_model_promotions_total", (("action", "rollback"),))] == 0
    roles = {labels[0][1]: value for (name, labels), value in found.items() if name == "echo_model_versions"}
    assert roles == {"registered": 1, "candidate": 0, "serving": 1, "retired": 0, "rejected": 1}


def test_liveness_and_readiness(server):
    assert get(server, "/healthz") == (200, "ok\n")
    assert get(server, "/readyz") == (200, "ready\n")
    server.failing["broker"] = "the broker at redis://127.0.0.1:6379/0 does not answer"
    status, body = get(server, "/readyz")
    assert status == 503 and body.startswith("broker: the broker at redis://")
    assert get(server, "/nowhere")[0] == 404


def test_a_database_gone_away_is_503_not_a_crash(sqlite_db, tmp_path):
    def broken():
        raise ConnectionError("database down")

    probes = Probes(registry_with(NodeCollector(broken, tmp_path)), {"database": broken})
    running = ObserveServer("127.0.0.1", 0, probes).start()
    try:
        assert get(running, "/metrics") == (503, "metrics unavailable: ConnectionError\n")
        assert get(running, "/readyz") == (503, "database: ConnectionError: database down\n")
        assert get(running, "/healthz")[0] == 200
    finally:
        running.stop()
