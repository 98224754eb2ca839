"""Peers that misbehave, against a real `echo-node serve` (embedded: SQLite, worker child process):
a PACS down for a while; a RIS that answers AE then AA, AR, nothing at all, or is down for a while.
Nothing sent is lost, nothing is sent twice under two identities; what is refused is failed, visibly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from node.config.settings import load_settings
from node.store.database import Database, open_database
from node.store.models import Delivery, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, StudyState
from tests.e2e.conftest import SiteRis
from tests.faults.site import Ledger, Ris, StudyStates, chest_study, send, settle

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

WAITING = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


@dataclass
class Node(StudyStates):
    port: int
    database: Database
    logs: object

    def deliveries(self, kind: DeliveryKind) -> list[Delivery]:
        with self.database.sessions() as session:
            return list(session.scalars(select(Delivery).where(Delivery.kind == kind)))

    def last_reason(self, study_uid: str) -> str:
        with self.database.sessions() as session:
            return session.scalars(
                select(StudyEvent.reason)
                .join(Study, Study.id == StudyEvent.study_id)
                .where(Study.study_instance_uid == study_uid)
                .order_by(StudyEvent.id.desc())
            ).first()


@pytest.fixture(scope="module")
def faulty_ris(free_ports) -> Iterator[Ris]:
    ris = Ris(SiteRis(), free_ports())
    ris.start()
    yield ris
    ris.stop()


@pytest.fixture
def ris(faulty_ris: Ris) -> Ris:
    if faulty_ris._server is None:
        faulty_ris.start()
    with faulty_ris.site._lock:
        faulty_ris.site.script = ["AA"]
        faulty_ris.site.received.clear()
        faulty_ris.site.raw.clear()
    return faulty_ris


@pytest.fixture(scope="module")
def node(tmp_path_factory, launch, _module_pacs, faulty_ris, model_dir, environment, free_ports, dcmtk, wait):
    port = free_ports()
    data_dir = tmp_path_factory.mktemp("peer-faults")
    env = environment(data_dir, port, model_dir, pacs=_module_pacs.address, ris=faulty_ris.address)
    env["ECHO_DELIVERY_BACKOFF_SECONDS"] = "0.5"
    launch("serve", ["-m", "node.serve.cli", "serve"], env)
    echo = ("/usr/bin/echoscu", "-aet", "ECHODEMO", "-aec", "ECHO", "127.0.0.1", str(port))
    wait(lambda: dcmtk(*echo).returncode == 0, 90, "the node", launch.logs)
    database = open_database(load_settings(data_dir=Path(data_dir)))
    yield Node(port, database, launch.logs)
    database.dispose()


def _send(node: Node, ledger: Ledger, count: int) -> list[str]:
    studies = [chest_study(ledger.scenario[:6].upper()) for _ in range(count)]
    for study in studies:
        assert send(node.port, [study]) == [0]
        ledger.sent_ok(study)
    return [str(study.StudyInstanceUID) for study in studies]


def _settle(node: Node, ledger: Ledger, pacs, ris: Ris, wait, timeout_s: float = 90):
    return settle(node, ledger, pacs, ris.site, wait, node.logs, timeout_s)


def test_a_pacs_down_for_a_while_gets_every_sr_when_it_is_back(node: Node, pacs, ris: Ris, wait) -> None:
    ledger = Ledger("PACS down for a while")
    pacs.stop()
    uids = _send(node, ledger, 3)
    wait(
        lambda: (
            sum(
                row.attempts >= 2
                for row in node.deliveries(DeliveryKind.SR)
                if row.status is DeliveryStatus.RETRYING
            )
            >= 3
        ),
        60,
        "the SRs retrying",
        node.logs,
    )
    pacs.start()
    row = _settle(node, ledger, pacs, ris, wait)
    assert set(node.states(uids).values()) == {StudyState.DELIVERED}
    assert (row.sent, row.rows, row.sr, row.oru, row.lost, row.duplicated) == (3, 3, 3, 3, 0, 0)


def test_a_ris_answering_ae_then_aa_gets_each_oru_once(node: Node, pacs, ris: Ris, wait) -> None:
    ledger = Ledger("RIS answers AE, then AA")
    ris.site.script = ["AE", "AA"]
    uids = _send(node, ledger, 2)
    row = _settle(node, ledger, pacs, ris, wait)
    assert set(node.states(uids).values()) == {StudyState.DELIVERED}
    assert (row.lost, row.duplicated, row.oru) == (0, 0, 2)
    assert row.resent == 1, "the ORU answered AE went again under its control id"


def test_a_ris_refusing_with_ar_fails_the_study_with_the_reason(node: Node, pacs, ris: Ris, wait) -> None:
    ledger = Ledger("RIS refuses (AR)")
    ris.site.script = ["AR"]
    [uid] = _send(node, ledger, 1)
    row = _settle(node, ledger, pacs, ris, wait)
    assert node.states([uid]) == {uid: StudyState.FAILED}
    assert "receiver rejected the message (AR): unknown order" in node.last_reason(uid)
    assert (row.sr, row.oru, row.lost, row.duplicated, row.resent) == (1, 1, 0, 0, 0)


def test_a_silent_ris_is_asked_again_and_the_oru_arrives_once(node: Node, pacs, ris: Ris, wait) -> None:
    ledger = Ledger("RIS silent, then AA")
    ris.site.script = ["silent", "AA"]
    uids = _send(node, ledger, 1)
    row = _settle(node, ledger, pacs, ris, wait)
    assert set(node.states(uids).values()) == {StudyState.DELIVERED}
    assert (row.lost, row.duplicated, row.resent) == (0, 0, 1)


def test_a_ris_down_for_a_while_gets_every_oru_when_it_is_back(node: Node, pacs, ris: Ris, wait) -> None:
    ledger = Ledger("RIS down for a while")
    ris.stop()
    uids = _send(node, ledger, 2)

    def both_waiting() -> bool:  # one ORU retried; the RIS's other one waits its turn (pending)
        rows = [row for row in node.deliveries(DeliveryKind.ORU) if row.status in WAITING]
        return len(rows) >= 2 and max(row.attempts for row in rows) >= 2

    wait(both_waiting, 60, "the ORUs retrying", node.logs)
    ris.start()
    row = _settle(node, ledger, pacs, ris, wait)
    assert set(node.states(uids).values()) == {StudyState.DELIVERED}
    assert (row.sent, row.sr, row.oru, row.lost, row.duplicated) == (2, 2, 2, 0, 0)
