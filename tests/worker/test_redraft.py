"""A frontal view arriving after a draft read from a lateral: queued again, drafted again from the
frontal as the next revision, sent as a corrected preliminary, and the stale draft never sent after it.

The pieces are the real ones (ingest, assembly, inference with an engine stand-in, the outbox with
recording senders) on a SQLite database and spool; the same flow through `echo-node serve` is in
tests/e2e/test_redraft_e2e.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import hl7
import pytest
from pydicom import Dataset
from pydicom.uid import ComprehensiveSRStorage
from sqlalchemy import select

from exporters.outcome import SendStatus
from node.delivery.messages import sr_series_uid
from node.delivery.outbox import Outbox
from node.dicom.assembly import StudyAssembler
from node.store.database import Database
from node.store.jobs import claim_inference
from node.store.models import Delivery, Instance, Job, Report, Study, StudyEvent
from node.store.reconcile import ReconcilePolicy, reconcile
from node.store.redraft import NON_FRONTAL_MARK, REDRAFT_REASON
from node.store.states import DeliveryKind, DeliveryStatus, JobState, StudyState
from tests.worker.test_outbox import AA, AE, RecordingRis, RecordingStore
from worker.inference import StudyInference, model_facts, register_model
from worker.views import ViewCandidate, pick_frontal

PACS = "PACS@127.0.0.1:11113"
RIS = "127.0.0.1:2575"


class Publisher:
    def __init__(self) -> None:
        self.published: list[int] = []

    def publish_inference(self, study_id: int) -> None:
        self.published.append(study_id)


class Site:
    """A node's parts over one database: store images, assemble, infer, deliver."""

    def __init__(self, database: Database, settings, store_study, engine, clock) -> None:
        self.database = database
        self.settings = settings
        self.store_study = store_study
        self.engine = engine
        self.clock = clock
        self.publisher = Publisher()
        self.assembler = StudyAssembler(
            database.sessions, 0, self.publisher, draft_lateral_only=settings.draft_lateral_only
        )
        self.inference = StudyInference(
            database.sessions,
            settings,
            lambda: engine,
            lambda loaded: register_model(database.sessions, model_facts(loaded)),
            stale_after=timedelta(seconds=360),
        )
        self.store = RecordingStore()
        self.ris = RecordingRis()
        self.tasks = 0

    def receive(self, *images: Dataset) -> int:
        return self.store_study(*images, state=StudyState.RECEIVED)

    def assemble(self) -> list[int]:
        return self.assembler.sweep().published

    def infer(self, study_id: int):
        self.tasks += 1
        return self.inference.run(study_id, f"task-{self.tasks}")

    def deliver(self):
        self.clock.advance(1)
        self.clock.catch_up()  # rows written since with the real clock are due, however slow the machine
        return Outbox(
            self.database.sessions,
            self.settings,
            clock=self.clock.now,
            jitter=lambda: 1.0,
            store=self.store,
            send_oru=self.ris,
        ).run_due()

    # ---- reading back -----------------------------------------------------------------------------

    def reports(self, study_id: int) -> list[Report]:
        with self.database.sessions() as session:
            return list(
                session.scalars(select(Report).where(Report.study_id == study_id).order_by(Report.id))
            )

    def deliveries(self, report_id: int) -> dict[DeliveryKind, Delivery]:
        with self.database.sessions() as session:
            rows = session.scalars(select(Delivery).where(Delivery.report_id == report_id))
            return {row.kind: row for row in rows}

    def study(self, study_id: int) -> Study:
        with self.database.sessions() as session:
            return session.get_one(Study, study_id)

    def last_event(self, study_id: int) -> tuple[StudyState | None, StudyState, str | None]:
        with self.database.sessions() as session:
            event = session.scalars(
                select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id.desc())
            ).first()
            assert event is not None
            return event.from_state, event.to_state, event.reason

    def instance_id(self, image: Dataset) -> int:
        with self.database.sessions() as session:
            return session.scalars(
                select(Instance.id).where(Instance.sop_instance_uid == image.SOPInstanceUID)
            ).one()


@pytest.fixture
def site(database: Database, node_settings, store_study, engine, clock) -> Site:
    settings = node_settings(pacs=PACS, ris=RIS, draft_lateral_only=True, delivery_backoff_seconds=2.0)
    return Site(database, settings, store_study, engine, clock)


def drafted_from_a_lateral(site: Site, images, *, delivered: bool = True) -> tuple[int, Dataset, Report]:
    """A lateral alone, drafted (the site allows it) and, when `delivered`, sent to the PACS and RIS."""
    lateral = images.chest(view_position="LL", instance_number=1)
    study_id = site.receive(lateral)
    assert site.assemble() == [study_id]
    assert site.infer(study_id).outcome == "reported"
    if delivered:
        tick = site.deliver()
        assert len(tick.delivered) == 2
        assert site.study(study_id).state is StudyState.DELIVERED
    [report] = site.reports(study_id)
    assert report.view_reason.startswith(NON_FRONTAL_MARK)
    return study_id, lateral, report


def sent_sr(site: Site, call: int) -> Dataset:
    [sr] = site.store.calls[call][0]
    return sr


def test_a_pa_after_a_delivered_lateral_draft_sends_a_corrected_preliminary(site: Site, images) -> None:
    study_id, lateral, first = drafted_from_a_lateral(site, images)
    first_rows = site.deliveries(first.id)

    pa = images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2)
    assert site.receive(pa) == study_id
    assert site.study(study_id).state is StudyState.QUEUED
    assert site.last_event(study_id) == (StudyState.DELIVERED, StudyState.QUEUED, REDRAFT_REASON)
    assert site.assemble() == [study_id]

    result = site.infer(study_id)

    assert result.outcome == "reported" and result.report_id != first.id
    first_again, second = site.reports(study_id)
    assert (second.revision, second.supersedes_id, second.instance_id) == (2, first.id, site.instance_id(pa))
    assert (first_again.revision, first_again.supersedes_id) == (1, None)
    assert second.view_reason == "instance 2: View Position PA"
    assert second.identity["key"]["SOPInstanceUID"] == pa.SOPInstanceUID  # frozen afresh, from the PA
    assert site.engine.read == [Path(path_of(site, lateral)), Path(path_of(site, pa))]  # the PA read second
    assert site.last_event(study_id) == (
        StudyState.QUEUED,
        StudyState.INFERRED,
        f"report {second.id} drafted (revision 2, corrects report {first.id} read from a non-frontal view); "
        "instance 2: View Position PA",
    )
    rows = site.deliveries(second.id)
    assert rows[DeliveryKind.SR].message_id != first_rows[DeliveryKind.SR].message_id
    assert rows[DeliveryKind.ORU].message_id != first_rows[DeliveryKind.ORU].message_id
    assert {row.status for row in rows.values()} == {DeliveryStatus.PENDING}
    # what the first draft delivered stays delivered: the correction replaces it at the PACS and RIS
    assert {row.status for row in site.deliveries(first.id).values()} == {DeliveryStatus.DELIVERED}

    tick = site.deliver()

    assert sorted(tick.delivered) == sorted(row.id for row in rows.values())
    sr = sent_sr(site, 1)
    assert sr.SOPInstanceUID == rows[DeliveryKind.SR].message_id != first_rows[DeliveryKind.SR].message_id
    (study,) = sr.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (previous,) = series.ReferencedSOPSequence
    old_uid = first_rows[DeliveryKind.SR].message_id
    assert (study.StudyInstanceUID, series.SeriesInstanceUID) == (
        lateral.StudyInstanceUID,
        sr_series_uid(old_uid),
    )
    assert (previous.ReferencedSOPInstanceUID, previous.ReferencedSOPClassUID) == (
        old_uid,
        ComprehensiveSRStorage,
    )
    assert sr.PreliminaryFlag == "PRELIMINARY" and sr.VerificationFlag == "UNVERIFIED"
    assert "PredecessorDocumentsSequence" not in sent_sr(site, 0)
    message, control_id = site.ris.sent[1]
    oru = hl7.parse(message.decode())
    assert control_id == rows[DeliveryKind.ORU].message_id == str(oru.segment("MSH")[10])
    assert str(oru.segment("OBR")[25]) == "C"
    assert {str(obx[11]) for obx in oru.segments("OBX")} == {"C"}
    assert str(hl7.parse(site.ris.sent[0][0].decode()).segment("OBR")[25]) == "P"
    assert site.study(study_id).state is StudyState.DELIVERED


def path_of(site: Site, image: Dataset) -> str:
    with site.database.sessions() as session:
        return session.scalars(
            select(Instance.path).where(Instance.sop_instance_uid == image.SOPInstanceUID)
        ).one()


def test_the_task_run_twice_writes_revision_2_once(site: Site, images, database: Database) -> None:
    study_id, lateral, first = drafted_from_a_lateral(site, images)
    site.receive(images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2))
    site.assemble()
    second = site.infer(study_id)
    duplicate = site.infer(study_id)  # the same message delivered twice
    assert duplicate.outcome == "skipped" and "is inferred, not queued" in duplicate.detail
    with database.sessions.begin() as session:  # as if the attempt had not been recorded as done
        for job in session.scalars(select(Job).where(Job.study_id == study_id)):
            job.state = JobState.FAILED
        session.get_one(Study, study_id).state = StudyState.QUEUED
    again = site.infer(study_id)
    assert (again.outcome, again.report_id) == ("reported", second.report_id)
    assert sorted(again.delivery_ids) == sorted(second.delivery_ids)
    assert [(r.revision, r.supersedes_id) for r in site.reports(study_id)] == [(1, None), (2, first.id)]
    assert len(site.engine.read) == 2
    with database.sessions() as session:
        assert len(list(session.scalars(select(Delivery)))) == 4


def test_a_lateral_after_a_frontal_draft_does_not_queue_the_study_again(site: Site, images) -> None:
    pa = images.chest(view_position="PA", instance_number=1)
    study_id = site.receive(pa)
    site.assemble()
    site.infer(study_id)
    site.deliver()
    assert (
        site.receive(images.chest(study_uid=pa.StudyInstanceUID, view_position="LL", instance_number=2))
        == study_id
    )
    assert site.study(study_id).state is StudyState.DELIVERED
    assert site.assemble() == []
    assert len(site.reports(study_id)) == 1


def test_stale_rows_of_the_lateral_draft_are_stopped_and_never_sent_after_the_correction(
    site: Site, images
) -> None:
    """PACS and RIS away while the lateral draft waits: its rows retry; the PA's draft stops them."""
    site.store.statuses = [SendStatus.RETRY, SendStatus.DELIVERED]
    site.ris.answers = [AE, AA]
    study_id, lateral, first = drafted_from_a_lateral(site, images, delivered=False)
    site.deliver()
    assert {row.status for row in site.deliveries(first.id).values()} == {DeliveryStatus.RETRYING}

    site.receive(images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2))
    site.assemble()
    assert site.infer(study_id).outcome == "reported"
    second = site.reports(study_id)[-1]
    assert second.supersedes_id == first.id

    for row in site.deliveries(first.id).values():
        assert (row.status, row.next_attempt_at) == (DeliveryStatus.FAILED, None)
        assert row.last_error == (
            f"superseded by report {second.id} (revision 2), the draft read from the frontal view: not sent"
        )
    site.clock.advance(3600)
    tick = site.deliver()
    new_rows = site.deliveries(second.id)
    assert sorted(tick.delivered) == sorted(row.id for row in new_rows.values())
    assert [sr.SOPInstanceUID for datasets, _ in site.store.calls[1:] for sr in datasets] == [
        new_rows[DeliveryKind.SR].message_id
    ]
    assert [control_id for _, control_id in site.ris.sent[1:]] == [new_rows[DeliveryKind.ORU].message_id]
    # the lateral draft's messages were tried (they may be there): the new ones correct them
    assert (
        sent_sr(site, 1)
        .PredecessorDocumentsSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence[0]
        .ReferencedSOPInstanceUID
        == site.deliveries(first.id)[DeliveryKind.SR].message_id
    )
    assert str(hl7.parse(site.ris.sent[-1][0].decode()).segment("OBR")[25]) == "C"
    assert site.study(study_id).state is StudyState.DELIVERED  # settled by the correction, not failed


def test_a_lateral_draft_that_never_left_is_replaced_by_a_plain_draft(site: Site, images) -> None:
    study_id, lateral, first = drafted_from_a_lateral(site, images, delivered=False)
    site.receive(images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2))
    site.assemble()
    site.infer(study_id)
    assert {row.status for row in site.deliveries(first.id).values()} == {DeliveryStatus.FAILED}
    site.deliver()
    [([sr], _)] = site.store.calls
    assert "PredecessorDocumentsSequence" not in sr
    [(message, _)] = site.ris.sent
    assert str(hl7.parse(message.decode()).segment("OBR")[25]) == "P"


def test_a_row_being_sent_when_it_is_superseded_stays_stopped(site: Site, images) -> None:
    """The PA's draft is written while the lateral draft's SR is on the wire, and that send fails."""
    study_id, lateral, first = drafted_from_a_lateral(site, images, delivered=False)
    pa = images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2)

    def pacs_while_the_pa_arrives(datasets, peer, *, calling_ae, timeout, tls):
        site.receive(pa)
        site.assemble()
        assert site.infer(study_id).outcome == "reported"
        return RecordingStore(statuses=[SendStatus.RETRY])(
            datasets, peer, calling_ae=calling_ae, timeout=timeout, tls=tls
        )

    site.store = pacs_while_the_pa_arrives  # type: ignore[assignment]
    site.ris.answers = [AA]
    tick = site.deliver()

    old = site.deliveries(first.id)
    assert (old[DeliveryKind.SR].status, old[DeliveryKind.SR].attempts) == (DeliveryStatus.FAILED, 1)
    assert old[DeliveryKind.SR].last_error.startswith("superseded by report")
    assert "could not connect" in old[DeliveryKind.SR].last_error
    # claimed in the same tick, stopped before its turn came: never sent, its attempt taken back
    assert (old[DeliveryKind.ORU].status, old[DeliveryKind.ORU].attempts) == (DeliveryStatus.FAILED, 0)
    assert tick.stopped == [old[DeliveryKind.ORU].id] and site.ris.sent == []
    # the old report decided nothing: the study waits for its correction's deliveries
    assert site.study(study_id).state is StudyState.INFERRED

    site.store = RecordingStore()
    site.deliver()
    [([sr], _)] = site.store.calls
    assert "PredecessorDocumentsSequence" in sr  # the old SR was on the wire: it may be at the PACS
    [(message, _)] = site.ris.sent
    assert str(hl7.parse(message.decode()).segment("OBR")[25]) == "P"  # the old ORU never left
    assert site.study(study_id).state is StudyState.DELIVERED


# ---- the claim and the reconciler in a re-draft round --------------------------------------------


def test_a_requeued_study_is_claimed_and_republished_despite_its_earlier_success(
    site: Site, images, database: Database
) -> None:
    study_id, lateral, _ = drafted_from_a_lateral(site, images)
    site.receive(images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2))
    with database.sessions.begin() as session:
        session.get_one(Study, study_id).enqueued_at = datetime.now(UTC)  # published; the message is lost
        policy = ReconcilePolicy.from_settings(site.settings, 360)
        later = datetime.now(UTC) + timedelta(hours=1)
        assert reconcile(session, later, policy).republished == [study_id]
    with database.sessions.begin() as session:
        claim = claim_inference(session, study_id, "task-x", datetime.now(UTC), timedelta(seconds=360))
        assert claim.job_id is not None, claim.reason


def test_the_worker_marks_a_non_frontal_read_the_way_the_node_reads_it() -> None:
    """node.store.redraft cannot import worker.views: the mark it looks for is pinned here."""
    lateral = ViewCandidate(1, "1.2.1", view_position="LL")
    unknown = ViewCandidate(2, "1.2.2")
    frontal = ViewCandidate(3, "1.2.3", view_position="PA")
    assert pick_frontal([lateral]).reason.startswith(NON_FRONTAL_MARK)
    assert pick_frontal([unknown, lateral]).reason.startswith(NON_FRONTAL_MARK)
    assert not pick_frontal([lateral, frontal]).reason.startswith(NON_FRONTAL_MARK)


def test_a_pa_arriving_while_the_lateral_is_read_queues_the_study_again(site: Site, images) -> None:
    """Ingest finds the study queued (no draft yet) and leaves it; the attempt sees the PA as it stores."""
    lateral = images.chest(view_position="LL", instance_number=1)
    pa = images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2)
    study_id = site.receive(lateral)
    site.assemble()
    reading = site.engine.generate

    def generate_while_the_pa_arrives(image: Path):
        if len(site.engine.read) == 0:
            assert site.receive(pa) == study_id
            assert site.study(study_id).state is StudyState.QUEUED
        return reading(image)

    site.engine.generate = generate_while_the_pa_arrives  # type: ignore[method-assign]
    first = site.infer(study_id)

    assert site.study(study_id).state is StudyState.QUEUED
    assert site.last_event(study_id) == (StudyState.INFERRED, StudyState.QUEUED, REDRAFT_REASON)
    assert site.assemble() == [study_id]
    second = site.infer(study_id)
    assert second.report_id != first.report_id
    assert [(r.revision, r.instance_id) for r in site.reports(study_id)] == [
        (1, site.instance_id(lateral)),
        (2, site.instance_id(pa)),
    ]
    site.deliver()
    # the lateral draft never left: only the PA's goes out, as a plain draft
    [([sr], _)] = site.store.calls
    assert sr.SOPInstanceUID == site.deliveries(second.report_id)[DeliveryKind.SR].message_id
    assert "PredecessorDocumentsSequence" not in sr
    assert site.study(study_id).state is StudyState.DELIVERED


@pytest.mark.parametrize(
    "arriving",
    [{"view_position": "LL"}, {"view_position": "PA", "BodyPartExamined": "HAND"}],
    ids=["another lateral", "a hand PA"],
)
def test_what_arrives_while_the_lateral_is_read_must_be_a_frontal_chest_view(
    site: Site, images, arriving: dict
) -> None:
    lateral = images.chest(view_position="LL", instance_number=1)
    late = images.chest(study_uid=lateral.StudyInstanceUID, instance_number=2, **arriving)
    study_id = site.receive(lateral)
    site.assemble()
    reading = site.engine.generate

    def generate_while_it_arrives(image: Path):
        site.receive(late)
        return reading(image)

    site.engine.generate = generate_while_it_arrives  # type: ignore[method-assign]
    site.infer(study_id)
    assert site.study(study_id).state is StudyState.INFERRED
    assert site.assemble() == []
