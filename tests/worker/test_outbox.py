"""The outbox's bookkeeping with recording senders: claims, batches, backoff, limits, study states.

The same code against real peers on loopback (PACS, RIS) is in tests/e2e/test_delivery_faults.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import hl7
import pytest
from pydicom import Dataset
from sqlalchemy import select

from exporters.outcome import AckOutcome, SendStatus, StoreOutcome
from node.delivery.messages import sr_series_uid
from node.delivery.outbox import Outbox
from node.store.database import Database
from node.store.models import Delivery, Instance, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, StudyState

PACS = "PACS@127.0.0.1:11113"
RIS = "127.0.0.1:2575"


@dataclass
class RecordingStore:
    """send_datasets' stand-in: one call per association, answering `statuses` per dataset in turn."""

    statuses: list[SendStatus] = field(default_factory=lambda: [SendStatus.DELIVERED])
    calls: list[tuple[list[Dataset], str]] = field(default_factory=list)

    def __call__(self, datasets, peer, *, calling_ae, timeout, tls):
        self.calls.append((list(datasets), f"{peer.ae_title}@{peer.host}:{peer.port}"))
        status = self.statuses[min(len(self.calls), len(self.statuses)) - 1]
        outcomes = []
        for dataset in datasets:
            if status is SendStatus.DELIVERED:
                outcomes.append(
                    StoreOutcome(status=status, sop_instance_uid=dataset.SOPInstanceUID, status_code=0)
                )
            elif status is SendStatus.FAILED:
                outcomes.append(
                    StoreOutcome(
                        status=status,
                        error="C-STORE status 0xA900 data set does not match SOP class",
                        sop_instance_uid=dataset.SOPInstanceUID,
                        status_code=0xA900,
                    )
                )
            else:
                outcomes.append(
                    StoreOutcome(
                        status=status, error="could not connect", sop_instance_uid=dataset.SOPInstanceUID
                    )
                )
        return outcomes


@dataclass
class RecordingRis:
    """send_hl7's stand-in: answers `answers` in turn (the last one repeats)."""

    answers: list[AckOutcome] = field(default_factory=lambda: [AA])
    sent: list[tuple[bytes, str]] = field(default_factory=list)

    def __call__(self, message, host, port, *, control_id, timeout, tls_context):
        self.sent.append((message, control_id))
        return self.answers[min(len(self.sent), len(self.answers)) - 1]


AA = AckOutcome(status=SendStatus.DELIVERED, ack_code="AA")
AE = AckOutcome(status=SendStatus.RETRY, error="receiver error (AE): busy", ack_code="AE", ack_text="busy")
AR = AckOutcome(
    status=SendStatus.FAILED, error="receiver rejected the message (AR): unknown patient", ack_code="AR"
)
SILENT = AckOutcome(
    status=SendStatus.RETRY, error="timeout: no complete ACK from 127.0.0.1:2575 within 10.0s"
)


@pytest.fixture
def peers(node_settings):
    return node_settings(pacs=PACS, ris=RIS, delivery_backoff_seconds=2.0, delivery_max_attempts=3)


def outbox(database: Database, settings, clock, store=None, ris=None, **options) -> Outbox:
    return Outbox(
        database.sessions,
        settings,
        clock=clock.now,
        jitter=lambda: 1.0,
        store=store or RecordingStore(),
        send_oru=ris or RecordingRis(),
        **options,
    )


def deliveries(database: Database) -> dict[tuple[int, DeliveryKind], Delivery]:
    with database.sessions() as session:
        return {(row.report_id, row.kind): row for row in session.scalars(select(Delivery))}


def study_state(database: Database, study_id: int) -> tuple[StudyState, str | None]:
    with database.sessions() as session:
        reason = session.scalars(
            select(StudyEvent.reason).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id.desc())
        ).first()
        return session.get_one(Study, study_id).state, reason


def test_both_messages_delivered_move_the_study_to_delivered(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    image = images.chest()
    study_id = store_study(image)
    report_id = report_for(study_id, peers)
    store, ris = RecordingStore(), RecordingRis()
    tick = outbox(database, peers, clock, store, ris).run_due()

    rows = deliveries(database)
    sr, oru = rows[(report_id, DeliveryKind.SR)], rows[(report_id, DeliveryKind.ORU)]
    assert sorted(tick.delivered) == [sr.id, oru.id] and tick.retrying == tick.failed == []
    assert (sr.status, sr.attempts, sr.ack_code, sr.next_attempt_at) == (
        DeliveryStatus.DELIVERED,
        1,
        "0000",
        None,
    )
    assert (oru.status, oru.attempts, oru.ack_code) == (DeliveryStatus.DELIVERED, 1, "AA")
    [(datasets, target)] = store.calls
    assert target == PACS
    [sr_dataset] = datasets
    assert sr_dataset.SOPInstanceUID == sr.message_id
    assert sr_dataset.SeriesInstanceUID == sr_series_uid(sr.message_id)
    assert (sr_dataset.StudyInstanceUID, sr_dataset.PatientID) == (image.StudyInstanceUID, image.PatientID)
    [(message, control_id)] = ris.sent
    parsed = hl7.parse(message.decode())
    assert control_id == oru.message_id == str(parsed.segment("MSH")[10])
    assert str(parsed.segment("OBR")[18]) == image.AccessionNumber
    assert study_state(database, study_id) == (
        StudyState.DELIVERED,
        f"SR to {PACS} and ORU to {RIS} delivered",
    )


def test_the_srs_for_one_pacs_share_one_association(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    for _ in range(3):
        report_for(store_study(images.chest()), peers)
    store = RecordingStore()
    outbox(database, peers, clock, store).run_due()
    assert [len(datasets) for datasets, _ in store.calls] == [3]


def test_a_transient_failure_backs_off_exponentially_then_gives_up(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    study_id = store_study(images.chest())
    report_id = report_for(study_id, peers.model_copy(update={"ris": None}))
    store = RecordingStore([SendStatus.RETRY])
    box = outbox(database, peers, clock, store)

    box.run_due()
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert (row.status, row.attempts, row.last_error) == (DeliveryStatus.RETRYING, 1, "could not connect")
    assert row.next_attempt_at == clock.now() + timedelta(seconds=2)
    clock.advance(1.9)
    assert box.run_due().attempted == 0, "not due before its backoff ends"
    clock.advance(0.1)
    box.run_due()
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert (row.attempts, row.next_attempt_at) == (2, clock.now() + timedelta(seconds=4))
    assert study_state(database, study_id)[0] is StudyState.INFERRED
    clock.advance(4)
    box.run_due()
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert (row.status, row.attempts, row.next_attempt_at) == (DeliveryStatus.FAILED, 3, None)
    assert row.last_error == "gave up after 3 attempts: could not connect"
    assert len(store.calls) == 3
    assert study_state(database, study_id) == (
        StudyState.FAILED,
        f"SR to {PACS} failed: gave up after 3 attempts: could not connect",
    )


def test_a_permanent_refusal_fails_at_once(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    study_id = store_study(images.chest())
    report_id = report_for(study_id, peers)
    ris = RecordingRis([AR])
    tick = outbox(database, peers, clock, ris=ris).run_due()
    oru = deliveries(database)[(report_id, DeliveryKind.ORU)]
    assert tick.failed == [oru.id]
    assert (oru.status, oru.attempts, oru.ack_code) == (DeliveryStatus.FAILED, 1, "AR")
    assert oru.last_error == "receiver rejected the message (AR): unknown patient"
    clock.advance(3600)
    assert outbox(database, peers, clock, ris=ris).run_due().attempted == 0
    assert len(ris.sent) == 1
    assert study_state(database, study_id) == (
        StudyState.FAILED,
        f"ORU to {RIS} failed: receiver rejected the message (AR): unknown patient",
    )


def test_one_delivered_and_one_retrying_leaves_the_study_inferred(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    study_id = store_study(images.chest())
    report_for(study_id, peers)
    tick = outbox(database, peers, clock, ris=RecordingRis([AE])).run_due()
    assert len(tick.delivered) == len(tick.retrying) == 1
    assert study_state(database, study_id)[0] is StudyState.INFERRED


def test_a_claimed_row_is_not_sent_by_a_second_runner(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    report_for(store_study(images.chest()), peers)
    first = outbox(database, peers, clock)
    claimed = first._claim(None)
    assert len(claimed) == 2
    store, ris = RecordingStore(), RecordingRis()
    assert outbox(database, peers, clock, store, ris).run_due().attempted == 0
    assert store.calls == [] and ris.sent == []
    clock.advance(first.lease.total_seconds() + 1)  # the first runner died mid-send: its lease ends
    assert outbox(database, peers, clock, store, ris).run_due().attempted == 2


def test_after_a_silent_ris_its_other_messages_wait_for_the_next_tick(
    database: Database, node_settings, store_study, images, report_for, clock
) -> None:
    settings = node_settings(ris=RIS, delivery_backoff_seconds=2.0)
    first, second = (report_for(store_study(images.chest()), settings) for _ in range(2))
    ris = RecordingRis([SILENT, AA])
    tick = outbox(database, settings, clock, ris=ris).run_due()
    rows = deliveries(database)
    assert len(ris.sent) == 1 and tick.retrying == [rows[(first, DeliveryKind.ORU)].id]
    waiting = rows[(second, DeliveryKind.ORU)]
    assert (waiting.status, waiting.attempts) == (DeliveryStatus.PENDING, 0), (
        "handed back, attempt not counted"
    )
    assert waiting.next_attempt_at == rows[(first, DeliveryKind.ORU)].next_attempt_at
    clock.advance(2)
    assert len(outbox(database, settings, clock, ris=ris).run_due().delivered) == 2


def test_run_due_for_one_report_sends_only_its_rows(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    first = report_for(store_study(images.chest()), peers)
    second = report_for(store_study(images.chest()), peers)
    outbox(database, peers, clock).run_due(report_id=second)
    statuses = {key: row.status for key, row in deliveries(database).items()}
    assert {statuses[(second, kind)] for kind in DeliveryKind} == {DeliveryStatus.DELIVERED}
    assert {statuses[(first, kind)] for kind in DeliveryKind} == {DeliveryStatus.PENDING}


def test_a_source_image_gone_from_the_spool_fails_the_delivery(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    study_id = store_study(images.chest())
    report_id = report_for(study_id, peers)
    with database.sessions() as session:
        Path(session.scalars(select(Instance.path)).one()).unlink()
    store = RecordingStore()
    outbox(database, peers, clock, store).run_due()
    rows = deliveries(database)
    assert store.calls == []
    for kind in DeliveryKind:
        assert rows[(report_id, kind)].status is DeliveryStatus.FAILED
        assert rows[(report_id, kind)].last_error == "the report's source image is missing from the spool"


def test_a_study_without_accession_gets_its_sr_but_no_oru(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    study_id = store_study(images.chest(accession=""))
    report_id = report_for(study_id, peers)
    ris = RecordingRis()
    outbox(database, peers, clock, ris=ris).run_due()
    rows = deliveries(database)
    assert rows[(report_id, DeliveryKind.SR)].status is DeliveryStatus.DELIVERED
    oru = rows[(report_id, DeliveryKind.ORU)]
    assert (oru.status, ris.sent) == (DeliveryStatus.FAILED, [])
    assert oru.last_error == (
        "cannot build the ORU: study.accession_number is required: the RIS matches the report by it"
    )


def test_batch_size_must_be_positive(database: Database, peers, clock) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        outbox(database, peers, clock, batch_size=0)
