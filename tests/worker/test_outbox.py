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
from node.delivery import outbox as outbox_module
from node.delivery.messages import sr_series_uid
from node.delivery.outbox import Outbox
from node.delivery.supersede import stop_superseded
from node.store.database import Database
from node.store.models import Delivery, Instance, Report, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, StudyState

PACS = "PACS@127.0.0.1:11113"
SR_ORU = (DeliveryKind.SR, DeliveryKind.ORU)  # what these tests' settings send (node_settings: one SR)
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
    clock.catch_up()
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
    assert {statuses[(second, kind)] for kind in SR_ORU} == {DeliveryStatus.DELIVERED}
    assert {statuses[(first, kind)] for kind in SR_ORU} == {DeliveryStatus.PENDING}


def test_a_source_image_gone_from_the_spool_is_sent_from_the_frozen_identity(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    study_id = store_study(images.chest(patient_id="MRN-FROZEN"))
    report_id = report_for(study_id, peers)
    with database.sessions() as session:
        Path(session.scalars(select(Instance.path)).one()).unlink()
    store, ris = RecordingStore(), RecordingRis()
    outbox(database, peers, clock, store, ris).run_due()
    rows = deliveries(database)
    assert {rows[(report_id, kind)].status for kind in SR_ORU} == {DeliveryStatus.DELIVERED}
    [([sr], _)] = store.calls
    assert sr.PatientID == "MRN-FROZEN"
    assert "MRN-FROZEN" in hl7.parse(ris.sent[0][0].decode().replace("\n", "\r")).segment("PID")[3][0][0]


def test_a_report_never_goes_out_under_the_patient_of_a_later_resend(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    """The same SOP Instance UID re-sent under another study and patient while the first draft waits."""
    first_image = images.chest(patient_id="MRN-FIRST", accession="ACC-FIRST", PatientName="First^Pat")
    first_study = store_study(first_image)
    report_id = report_for(first_study, peers)
    second_image = images.chest(patient_id="MRN-SECOND", accession="ACC-SECOND", PatientName="Second^Pat")
    second_image.SOPInstanceUID = first_image.SOPInstanceUID
    store_study(second_image, state=StudyState.RECEIVED)

    store, ris = RecordingStore(), RecordingRis()
    tick = outbox(database, peers, clock, store, ris).run_due()

    rows = deliveries(database)
    assert (store.calls, ris.sent) == ([], [])
    assert sorted(tick.held) == sorted(rows[(report_id, kind)].id for kind in SR_ORU)
    for kind in SR_ORU:
        row = rows[(report_id, kind)]
        assert (row.status, row.next_attempt_at) == (DeliveryStatus.HELD, None)
        assert "held for an operator" in row.last_error and "PatientID" in row.last_error
        assert "MRN-" not in row.last_error and "ACC-" not in row.last_error
    assert study_state(database, first_study)[0] is StudyState.INFERRED
    clock.advance(3600)
    assert outbox(database, peers, clock, store, ris).run_due().attempted == 0


def test_a_report_without_a_frozen_identity_is_held(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    report_id = report_for(store_study(images.chest()), peers)
    with database.sessions.begin() as session:
        session.get_one(Report, report_id).identity = None
    store = RecordingStore()
    outbox(database, peers, clock, store).run_due()
    rows = deliveries(database)
    assert store.calls == []
    assert rows[(report_id, DeliveryKind.SR)].status is DeliveryStatus.HELD
    assert "no frozen identity" in rows[(report_id, DeliveryKind.SR)].last_error


def test_any_builder_error_fails_that_message_and_the_batch_goes_on(
    database: Database, peers, store_study, images, report_for, clock, monkeypatch
) -> None:
    broken = report_for(store_study(images.chest(accession="ACC-BROKEN")), peers)
    fine = report_for(store_study(images.chest(accession="ACC-FINE")), peers)

    real_report_oru = outbox_module.report_oru

    def report_oru(source, *args, **kwargs):
        if source.AccessionNumber == "ACC-BROKEN":
            raise LookupError("MaxLengthReached: a field longer than the standard allows")
        return real_report_oru(source, *args, **kwargs)

    monkeypatch.setattr(outbox_module, "report_oru", report_oru)
    ris = RecordingRis()
    tick = outbox(database, peers, clock, ris=ris).run_due()

    rows = deliveries(database)
    assert rows[(broken, DeliveryKind.ORU)].status is DeliveryStatus.FAILED
    assert rows[(broken, DeliveryKind.ORU)].last_error == (
        "cannot build the ORU: LookupError: MaxLengthReached: a field longer than the standard allows"
    )
    assert rows[(fine, DeliveryKind.ORU)].status is DeliveryStatus.DELIVERED
    assert len(ris.sent) == 1 and tick.attempted == 4


def test_a_sender_that_raises_leaves_its_rows_due_again_not_stuck(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    report_id = report_for(store_study(images.chest()), peers)

    def exploding_store(*args, **kwargs):
        raise RuntimeError("association thread died")

    outbox(database, peers, clock, exploding_store).run_due()
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert row.status is DeliveryStatus.RETRYING
    assert row.last_error == "C-STORE failed: RuntimeError: association thread died"


def test_a_crash_mid_tick_hands_unsent_rows_back_at_once(
    database: Database, peers, store_study, images, report_for, clock, monkeypatch
) -> None:
    report_id = report_for(store_study(images.chest()), peers)
    box = outbox(database, peers, clock)
    monkeypatch.setattr(box, "_send_srs", lambda *args: (_ for _ in ()).throw(MemoryError("boom")))
    with pytest.raises(MemoryError):
        box.run_due()
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert row.status is DeliveryStatus.PENDING
    assert row.next_attempt_at <= clock.now(), "not left waiting for the lease"


def test_transient_failures_are_retried_over_the_horizon_not_a_count(
    database: Database, node_settings, store_study, images, report_for, clock
) -> None:
    settings = node_settings(pacs=PACS, delivery_backoff_seconds=60.0, delivery_horizon_hours=24)
    study_id = store_study(images.chest())
    report_id = report_for(study_id, settings)
    store = RecordingStore([SendStatus.RETRY])
    box = outbox(database, settings, clock, store)
    for _ in range(40):  # about 8 hours of a PACS that is down
        box.run_due()
        clock.advance(900)
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert row.status is DeliveryStatus.RETRYING and row.attempts > 8
    assert study_state(database, study_id)[0] is StudyState.INFERRED
    clock.advance(24 * 3600)
    box.run_due()
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert row.status is DeliveryStatus.FAILED
    assert row.last_error.startswith("gave up after 24 h and ")


def test_a_destination_that_answers_again_wakes_its_waiting_rows(
    database: Database, node_settings, store_study, images, report_for, clock
) -> None:
    settings = node_settings(pacs=PACS, delivery_backoff_seconds=600.0)
    waiting = report_for(store_study(images.chest()), settings)
    outbox(database, settings, clock, RecordingStore([SendStatus.RETRY])).run_due()
    assert deliveries(database)[(waiting, DeliveryKind.SR)].next_attempt_at > clock.now()
    fresh = report_for(store_study(images.chest()), settings)
    clock.advance(1)
    store = RecordingStore()
    outbox(database, settings, clock, store).run_due(report_id=fresh)
    assert deliveries(database)[(waiting, DeliveryKind.SR)].next_attempt_at <= clock.now()
    outbox(database, settings, clock, store).run_due()
    assert deliveries(database)[(waiting, DeliveryKind.SR)].status is DeliveryStatus.DELIVERED


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


def test_a_malformed_optional_header_value_is_repaired_and_noted_not_fatal(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    image = images.chest(PatientSex="Male", StudyTime="256199", IssuerOfPatientID="ISSUER-" + "X" * 33)
    report_id = report_for(store_study(image), peers)
    store, ris = RecordingStore(), RecordingRis()
    outbox(database, peers, clock, store, ris).run_due()
    rows = deliveries(database)
    sr, oru = rows[(report_id, DeliveryKind.SR)], rows[(report_id, DeliveryKind.ORU)]
    assert (sr.status, oru.status) == (DeliveryStatus.DELIVERED, DeliveryStatus.DELIVERED)
    assert "header repaired: " in sr.ack_text and "PatientSex" in sr.ack_text
    assert "header repaired: " in oru.ack_text and "PID-3.4" in oru.ack_text
    assert "ISSUER-" not in sr.ack_text + oru.ack_text, "notes never carry the values"


def test_a_study_flagged_for_conflicting_instances_after_its_draft_is_held(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    study_id = store_study(images.chest())
    report_id = report_for(study_id, peers)
    with database.sessions.begin() as session:
        session.get_one(Study, study_id).identity_conflict = "instances disagree on PatientID"
    store = RecordingStore()
    outbox(database, peers, clock, store).run_due()
    row = deliveries(database)[(report_id, DeliveryKind.SR)]
    assert store.calls == []
    assert (row.status, row.last_error) == (
        DeliveryStatus.HELD,
        "instances disagree on PatientID; held for an operator",
    )


def test_a_superseded_draft_s_unsent_rows_are_stopped_and_its_delivered_ones_kept(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    """stop_superseded: pending, retrying and held rows end failed with the reason; delivered stays."""
    report_id = report_for(store_study(images.chest()), peers)
    with database.sessions.begin() as session:
        sr, oru = (
            session.scalars(select(Delivery).where(Delivery.kind == kind)).one() for kind in SR_ORU
        )
        sr.status = DeliveryStatus.DELIVERED
        oru.status = DeliveryStatus.HELD
        old = session.get_one(Report, report_id)
        newer = Report(
            study_id=old.study_id,
            model_version_id=old.model_version_id,
            findings="f",
            impression="i",
            text="t",
            tokens=1,
            forwards=1,
            seconds=0.1,
            revision=2,
            supersedes_id=report_id,
        )
        session.add(newer)
        session.flush()
        stopped = stop_superseded(session, report_id, newer, clock.now())
        newer_id = newer.id
    rows = deliveries(database)
    assert stopped == [rows[(report_id, DeliveryKind.ORU)].id]
    assert rows[(report_id, DeliveryKind.SR)].status is DeliveryStatus.DELIVERED
    oru_row = rows[(report_id, DeliveryKind.ORU)]
    assert (oru_row.status, oru_row.next_attempt_at) == (DeliveryStatus.FAILED, None)
    assert oru_row.last_error == (
        f"superseded by report {newer_id} (revision 2), the draft read from the frontal view: not sent"
    )
    assert outbox(database, peers, clock).run_due().attempted == 0


def test_the_sr_and_the_oru_name_the_decoding_that_wrote_the_draft(
    database: Database, peers, store_study, images, report_for, clock
) -> None:
    report_id = report_for(store_study(images.chest()), peers)
    with database.sessions() as session:
        decoding = session.get_one(Report, report_id).decoding
    assert decoding  # the worker stored it
    store, ris = RecordingStore(), RecordingRis()
    outbox(database, peers, clock, store, ris).run_due()
    [([sr], _)] = store.calls
    [parameters] = [
        item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111002"
    ]
    assert parameters.TextValue == decoding
    [(message, _)] = ris.sent
    observation_methods = {str(obx[17]) for obx in hl7.parse(message.decode()).segments("OBX")}
    assert observation_methods == {f"DECODING^{decoding}^99ECHO"}
