"""The outbox against real peers on loopback when they misbehave: a RIS answering AE then AA, AR, or
nothing at all; a PACS that is down for a while. The study is ingested and reported by the real
engine; the outbox runs in this process with short waits (backoff 0.2 s, timeout 1 s)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from echo.data.synthetic import generate_study
from echo.runtime import Engine
from node.config.settings import Settings, load_settings
from node.delivery.outbox import Outbox
from node.dicom.ingest import Ingestor
from node.dicom.outcome import ReceivedInstance
from node.dicom.spool import Spool
from node.store.database import Database, migrate, open_database
from node.store.models import Delivery, Study
from node.store.states import DeliveryKind, DeliveryStatus, StudyState
from node.store.transitions import transition
from worker.inference import StudyInference, model_facts, register_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Engine:
    return Engine.load(model_dir)


@pytest.fixture
def node(tmp_path: Path, pacs, ris, engine: Engine):
    """A reported study whose SR and ORU wait in the outbox, and the outbox to send them."""
    settings = load_settings(
        data_dir=tmp_path / "node",
        pacs=pacs.address,
        ris=ris.address,
        delivery_backoff_seconds=0.2,
        delivery_timeout_seconds=1.0,
        delivery_max_attempts=4,
        draft_gate=False,  # the outbox is under test: any draft of the synthetic study will do
    )
    database = open_database(settings)
    migrate(database.engine)
    study_id = _reported_study(database, settings, engine, tmp_path)
    yield Node(database, settings, study_id, Outbox(database.sessions, settings))
    database.dispose()


class Node:
    def __init__(self, database: Database, settings: Settings, study_id: int, outbox: Outbox) -> None:
        self.database, self.settings, self.study_id, self.outbox = database, settings, study_id, outbox

    def run_until(self, condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
        """Outbox ticks every 50 ms, as the node's loop does (less often), until `condition` holds."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"not reached in {timeout_s} s: {self.rows()}"
            self.outbox.run_due()
            time.sleep(0.05)

    def rows(self) -> dict[DeliveryKind, Delivery]:
        with self.database.sessions() as session:
            return {row.kind: row for row in session.scalars(select(Delivery))}

    def state(self) -> StudyState:
        with self.database.sessions() as session:
            return session.get_one(Study, self.study_id).state

    def settled(self, kind: DeliveryKind) -> bool:
        return self.rows()[kind].status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


def _reported_study(database: Database, settings: Settings, engine: Engine, tmp_path: Path) -> int:
    row = generate_study(5, 0, tmp_path / "study", size=128)
    image = dcmread(tmp_path / "study" / row.frontal)
    stored = Ingestor(database.sessions, Spool(settings.spool_dir)).store(
        ReceivedInstance(
            image.SOPClassUID,
            image.SOPInstanceUID,
            str(image.file_meta.TransferSyntaxUID),
            (tmp_path / "study" / row.frontal).read_bytes(),
        )
    )
    with database.sessions.begin() as session:
        study = session.get_one(Study, stored.study_id)
        transition(session, study, StudyState.COMPLETE, "test")
        transition(session, study, StudyState.QUEUED, "test")
    inference = StudyInference(
        database.sessions,
        settings,
        lambda: engine,
        lambda loaded: register_model(database.sessions, model_facts(loaded)),
        stale_after=timedelta(seconds=360),
    )
    result = inference.run(stored.study_id, "task-1")
    assert result.outcome == "reported", result.detail
    return stored.study_id


def test_a_ris_answering_ae_then_aa_gets_the_oru_delivered_once(node: Node, ris) -> None:
    ris.script = ["AE", "AA"]
    node.run_until(lambda: node.settled(DeliveryKind.ORU))
    oru = node.rows()[DeliveryKind.ORU]
    assert (oru.status, oru.attempts, oru.ack_code, oru.last_error) == (
        DeliveryStatus.DELIVERED,
        2,
        "AA",
        None,
    )
    sent_ids = [str(message.segment("MSH")[10]) for message in ris.received]
    assert sent_ids == [oru.message_id, oru.message_id], "a resend carries the same control id"
    node.run_until(lambda: node.state() is StudyState.DELIVERED)
    time.sleep(0.3)
    node.outbox.run_due()
    assert len(ris.received) == 2, "nothing is sent after the AA"


def test_a_ris_answering_ar_fails_the_oru_without_retrying(node: Node, ris) -> None:
    ris.script = ["AR"]
    node.run_until(lambda: node.settled(DeliveryKind.ORU))
    oru = node.rows()[DeliveryKind.ORU]
    assert (oru.status, oru.attempts, oru.ack_code) == (DeliveryStatus.FAILED, 1, "AR")
    assert oru.last_error == "receiver rejected the message (AR): unknown order"
    assert oru.ack_text == "unknown order"
    time.sleep(0.5)  # past any backoff
    node.outbox.run_due()
    assert len(ris.received) == 1
    assert node.state() is StudyState.FAILED


def test_a_ris_that_never_answers_times_out_and_is_retried(node: Node, ris) -> None:
    ris.script = ["silent", "AA"]
    started = time.monotonic()
    node.outbox.run_due()
    oru = node.rows()[DeliveryKind.ORU]
    assert time.monotonic() - started >= 1.0, "the client waited for its timeout"
    assert (oru.status, oru.attempts, oru.ack_code) == (DeliveryStatus.RETRYING, 1, None)
    assert oru.last_error == f"timeout: no complete ACK from {ris.address} within 1.0s"
    node.run_until(lambda: node.settled(DeliveryKind.ORU))
    assert node.rows()[DeliveryKind.ORU].status is DeliveryStatus.DELIVERED
    assert len(ris.received) == 2


def test_a_pacs_down_for_a_while_gets_the_sr_when_it_is_back(node: Node, pacs) -> None:
    pacs.stop()
    node.run_until(lambda: node.rows()[DeliveryKind.SR].attempts >= 2)
    sr = node.rows()[DeliveryKind.SR]
    assert sr.status is DeliveryStatus.RETRYING
    assert sr.last_error.startswith(f"could not connect to {pacs.address}")
    assert node.state() is StudyState.INFERRED, "nothing lost, nothing decided yet"
    pacs.start()
    node.run_until(lambda: node.state() is StudyState.DELIVERED)
    sr = node.rows()[DeliveryKind.SR]
    assert (sr.status, sr.ack_code) == (DeliveryStatus.DELIVERED, "0000")
    assert [dataset.SOPInstanceUID for dataset in pacs.received] == [sr.message_id]
