"""Study assembly: the quiet period, chest-or-skip, queued exactly once (also across restarts)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from node.dicom.assembly import StudyAssembler, skip_counts
from node.dicom.association_log import AssociationLog, Peer
from node.dicom.ingest import Ingestor
from node.dicom.outcome import ReceivedInstance
from node.dicom.spool import Spool
from node.store.database import Database
from node.store.models import Instance, Job, ModelVersion, Report, Study, StudyEvent
from node.store.redraft import REDRAFT_REASON
from node.store.states import AssociationOutcome, JobKind, JobState, StudyState
from node.store.transitions import transition

QUIET = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def parts(sqlite_db: Database, tmp_path: Path, clock: Clock, publisher) -> SimpleNamespace:
    return SimpleNamespace(
        ingestor=Ingestor(sqlite_db.sessions, Spool(tmp_path / "spool"), clock),
        associations=AssociationLog(sqlite_db.sessions, clock),
        assembler=StudyAssembler(sqlite_db.sessions, QUIET, publisher, clock),
    )


def receive(
    parts: SimpleNamespace,
    dicom: SimpleNamespace,
    attributes: dict[str, object] | None = None,
    **image_options: object,
):
    """One association delivering one image, left open; returns (live association, study id).

    `image_options` go to dicom.chest_image; `attributes` are then set on (or, when None, removed from)
    the image's header."""
    image = dicom.chest_image(**image_options)
    for keyword, value in (attributes or {}).items():
        if value is None:
            delattr(image, keyword)
        else:
            setattr(image, keyword, value)
    live = parts.associations.opened(Peer("STORESCU", "ECHO", "127.0.0.1", 4242))
    result = parts.ingestor.store(
        ReceivedInstance(
            image.SOPClassUID, image.SOPInstanceUID, ExplicitVRLittleEndian, dicom.part10(image), live.id
        )
    )
    assert result.stored
    return live, result.study_id


def state_of(db: Database, study_id: int) -> Study:
    with db.sessions() as session:
        return session.get_one(Study, study_id)


def test_a_study_waits_for_its_association_and_then_the_quiet_period(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    live, study_id = receive(parts, dicom)
    clock.advance(3 * QUIET)
    assert parts.assembler.sweep().queued == []  # association still open
    parts.associations.ended(live, AssociationOutcome.RELEASED)
    clock.advance(QUIET - 1)
    assert parts.assembler.sweep().queued == []  # released less than the quiet period ago
    clock.advance(1)
    swept = parts.assembler.sweep()
    assert (swept.queued, swept.published, publisher.published) == ([study_id], [study_id], [study_id])
    assert parts.assembler.sweep().published == []
    assert publisher.published == [study_id]
    study = state_of(sqlite_db, study_id)
    assert study.state is StudyState.QUEUED and study.enqueued_at == clock.now
    with sqlite_db.sessions() as session:
        moves = [
            (e.from_state, e.to_state) for e in session.scalars(select(StudyEvent).order_by(StudyEvent.id))
        ]
    assert moves == [
        (None, StudyState.RECEIVED),
        (StudyState.RECEIVED, StudyState.COMPLETE),
        (StudyState.COMPLETE, StudyState.QUEUED),
    ]


def test_a_new_instance_restarts_the_quiet_period(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace
) -> None:
    live, study_id = receive(parts, dicom)
    parts.associations.ended(live, AssociationOutcome.RELEASED)
    clock.advance(QUIET - 1)
    study_uid = state_of_uid(parts, study_id)
    live2, _ = receive(parts, dicom, study_uid=study_uid)
    parts.associations.ended(live2, AssociationOutcome.ABORTED)
    clock.advance(2)
    assert parts.assembler.sweep().queued == []
    clock.advance(QUIET)
    assert parts.assembler.sweep().queued == [study_id]


def state_of_uid(parts: SimpleNamespace, study_id: int) -> str:
    with parts.ingestor.sessions() as session:
        return session.get_one(Study, study_id).study_instance_uid


def test_other_studies_are_skipped_with_their_reason_and_never_published(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    live, study_id = receive(parts, dicom, modality="CR", body_part="HAND")
    parts.associations.ended(live, AssociationOutcome.RELEASED)
    clock.advance(QUIET)
    swept = parts.assembler.sweep()
    assert (swept.skipped, swept.queued, publisher.published) == ([study_id], [], [])
    study = state_of(sqlite_db, study_id)
    assert (study.state, study.skip_reason) == (StudyState.SKIPPED, "body part HAND is not CHEST")


def deliver(parts: SimpleNamespace, dicom: SimpleNamespace, **options: object) -> int:
    """One image in one association that ended; returns the study id."""
    live, study_id = receive(parts, dicom, **options)
    parts.associations.ended(live, AssociationOutcome.RELEASED)
    return study_id


def events_of(db: Database, study_id: int) -> list[tuple[StudyState | None, StudyState, str | None]]:
    with db.sessions() as session:
        rows = session.scalars(
            select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id)
        )
        return [(e.from_state, e.to_state, e.reason) for e in rows]


def test_a_hand_described_only_in_the_study_description_is_skipped_and_a_thorax_is_queued(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    hand = deliver(parts, dicom, body_part=None, attributes={"StudyDescription": "XR HAND 3 VIEWS"})
    thorax = deliver(parts, dicom, body_part="THORAX")
    clock.advance(QUIET)
    swept = parts.assembler.sweep()
    assert (swept.skipped, swept.queued, publisher.published) == ([hand], [thorax], [thorax])
    assert state_of(sqlite_db, hand).skip_reason == "study description names HAND, not CHEST"
    assert events_of(sqlite_db, thorax)[-1] == (
        StudyState.COMPLETE,
        StudyState.QUEUED,
        "chest radiograph (Body Part Examined THORAX): inference requested",
    )


def test_every_skip_is_counted_by_its_reason(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, sqlite_db: Database, caplog
) -> None:
    for body_part in ("KNEE", "KNEE", "HAND"):
        deliver(parts, dicom, body_part=body_part)
    deliver(parts, dicom, attributes={"ViewPosition": "LL"})
    clock.advance(QUIET)
    with caplog.at_level("INFO", logger="node.dicom.assembly"):
        assert len(parts.assembler.sweep().skipped) == 4
    expected = {
        "body part KNEE is not CHEST": 2,
        "body part HAND is not CHEST": 1,
        "lateral view only: waiting for a frontal": 1,
    }
    assert dict(parts.assembler.skips) == expected
    with sqlite_db.sessions() as session:
        assert skip_counts(session) == expected
    assert "skipped (body part KNEE is not CHEST); 2 skipped for this reason since start" in caplog.text


def test_a_lateral_alone_waits_and_the_frontal_reopens_it(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    study_id = deliver(parts, dicom, attributes={"ViewPosition": "LL"})
    clock.advance(QUIET)
    assert parts.assembler.sweep().skipped == [study_id]
    study = state_of(sqlite_db, study_id)
    assert (study.state, study.skip_reason) == (
        StudyState.SKIPPED,
        "lateral view only: waiting for a frontal",
    )
    assert publisher.published == []
    clock.advance(20)  # the PA arrives 20 s later
    assert deliver(parts, dicom, study_uid=study.study_instance_uid, modality="DX") == study_id
    assert state_of(sqlite_db, study_id).state is StudyState.RECEIVED
    assert parts.assembler.sweep().queued == []  # a new quiet period first
    clock.advance(QUIET)
    assert parts.assembler.sweep().queued == [study_id]
    assert publisher.published == [study_id]
    assert [(before, after) for before, after, _ in events_of(sqlite_db, study_id)] == [
        (None, StudyState.RECEIVED),
        (StudyState.RECEIVED, StudyState.COMPLETE),
        (StudyState.COMPLETE, StudyState.SKIPPED),
        (StudyState.SKIPPED, StudyState.RECEIVED),
        (StudyState.RECEIVED, StudyState.COMPLETE),
        (StudyState.COMPLETE, StudyState.QUEUED),
    ]
    assert state_of(sqlite_db, study_id).skip_reason is None


def test_a_lateral_alone_is_drafted_when_the_site_allows_it(
    sqlite_db: Database, parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher
) -> None:
    parts.assembler = StudyAssembler(sqlite_db.sessions, QUIET, publisher, clock, draft_lateral_only=True)
    study_id = deliver(parts, dicom, attributes={"ViewPosition": "LL"})
    clock.advance(QUIET)
    assert parts.assembler.sweep().queued == [study_id]


@pytest.mark.parametrize(
    ("attribute", "first", "second"),
    [
        ("PatientID", {}, {"PatientID": "OTHER-PATIENT"}),
        ("AccessionNumber", {}, {"AccessionNumber": "OTHER-ACC"}),
        # the study row keeps no issuer: only assembly, reading every header, can see this one
        ("IssuerOfPatientID", {"IssuerOfPatientID": "HOSP-A"}, {"IssuerOfPatientID": "HOSP-B"}),
    ],
)
def test_instances_that_disagree_on_the_patient_or_order_are_never_drafted(
    parts: SimpleNamespace,
    clock: Clock,
    dicom: SimpleNamespace,
    publisher,
    sqlite_db: Database,
    caplog,
    attribute: str,
    first: dict[str, object],
    second: dict[str, object],
) -> None:
    study_id = deliver(parts, dicom, attributes=first)
    uid = state_of(sqlite_db, study_id).study_instance_uid
    assert deliver(parts, dicom, study_uid=uid, attributes=second) == study_id
    clock.advance(QUIET)
    with caplog.at_level("DEBUG"):
        swept = parts.assembler.sweep()
    assert (swept.failed, swept.queued, publisher.published) == ([study_id], [], [])
    study = state_of(sqlite_db, study_id)
    assert (study.state, study.identity_conflict) == (StudyState.FAILED, f"instances disagree on {attribute}")
    assert events_of(sqlite_db, study_id)[-1] == (
        StudyState.COMPLETE,
        StudyState.FAILED,
        f"instances disagree on {attribute}: not drafted",
    )
    for value in [*first.values(), *second.values(), dicom.PATIENT_ID, "ACC0001"]:
        assert str(value) not in caplog.text


def test_a_missing_stored_file_is_decided_from_the_database_row(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, sqlite_db: Database
) -> None:
    study_id = deliver(parts, dicom)
    with sqlite_db.sessions() as session:
        Path(session.scalars(select(Instance.path)).one()).unlink()
    clock.advance(QUIET)
    assert parts.assembler.sweep().queued == [study_id]  # CR, Body Part Examined CHEST, PA: from the rows


def test_no_identifier_reaches_the_log_while_ingesting_and_assembling(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, caplog
) -> None:
    """A PHI canary: names, ids and accession numbers that must appear in no log record."""
    canaries = {
        "PatientName": "CANARYNAME^PHI",
        "PatientID": "CANARY-PID-7731",
        "IssuerOfPatientID": "CANARY-ISSUER",
        "AccessionNumber": "CANARY-ACC-55",
    }
    with caplog.at_level("DEBUG"):
        chest = deliver(parts, dicom, attributes=canaries)
        uid = state_of_uid(parts, chest)
        deliver(parts, dicom, study_uid=uid, attributes=canaries)  # a second instance
        hand = deliver(parts, dicom, body_part="HAND", attributes=canaries)
        lateral = deliver(parts, dicom, attributes={**canaries, "ViewPosition": "LL"})
        conflict = deliver(parts, dicom, attributes=canaries)
        other = {**canaries, "PatientID": "CANARY-PID-OTHER", "AccessionNumber": "CANARY-ACC-OTHER"}
        deliver(parts, dicom, study_uid=state_of_uid(parts, conflict), attributes=other)
        clock.advance(QUIET)
        swept = parts.assembler.sweep()
        # late instances: one after the queueing, one reopening the lateral study
        deliver(parts, dicom, study_uid=uid, attributes={**canaries, "PatientID": "CANARY-PID-LATE"})
        deliver(parts, dicom, study_uid=state_of_uid(parts, lateral), attributes=canaries)
    assert caplog.records
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}" for record in caplog.records
    )
    for value in [
        *canaries.values(),
        *other.values(),
        "CANARY-PID-LATE",
        "CANARY",
        "ACC0001",
        dicom.PATIENT_ID,
    ]:
        assert value not in logged
    assert f"study {chest}" in logged and f"study {conflict}" in logged
    # every path was taken: queued, skipped (another body part, a lateral alone), failed (conflict)
    assert (swept.queued, sorted(swept.skipped), swept.failed) == (
        [chest],
        sorted([hand, lateral]),
        [conflict],
    )


def test_a_broker_outage_delays_publishing_but_loses_nothing(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    live, study_id = receive(parts, dicom)
    parts.associations.ended(live, AssociationOutcome.RELEASED)
    clock.advance(QUIET)
    publisher.fail_with = ConnectionError("redis down")
    swept = parts.assembler.sweep()
    assert (swept.queued, swept.published) == ([study_id], [])
    assert state_of(sqlite_db, study_id).enqueued_at is None
    publisher.fail_with = None
    assert parts.assembler.sweep().published == [study_id]
    assert publisher.published == [study_id]


def test_a_crash_between_commit_and_publish_is_repaired_by_the_next_node(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    live, study_id = receive(parts, dicom)
    parts.associations.ended(live, AssociationOutcome.RELEASED)
    clock.advance(QUIET)
    publisher.fail_with = SystemExit("killed right after the commit")
    with pytest.raises(SystemExit):
        parts.assembler.sweep()
    assert state_of(sqlite_db, study_id).state is StudyState.QUEUED
    publisher.fail_with = None
    restarted = StudyAssembler(sqlite_db.sessions, QUIET, publisher, clock)
    assert restarted.sweep().published == [study_id]
    assert restarted.sweep().published == []
    assert publisher.published == [study_id]


def test_embedded_restart_republishes_only_studies_without_a_finished_inference(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    ids = []
    for _ in range(2):
        live, study_id = receive(parts, dicom)
        parts.associations.ended(live, AssociationOutcome.RELEASED)
        ids.append(study_id)
    clock.advance(QUIET)
    assert parts.assembler.sweep().published == ids
    with sqlite_db.sessions.begin() as session:
        session.add(
            Job(
                study_id=ids[0], kind=JobKind.INFER, attempt=1, state=JobState.SUCCEEDED, started_at=clock.now
            )
        )
    assert parts.assembler.republish_unfinished() == 1
    assert parts.assembler.sweep().published == [ids[1]]


@pytest.mark.integration
def test_a_study_is_queued_once_after_its_quiet_period(
    dcmtk, start_node, make_settings, dicom, publisher, tmp_path: Path, wait_for
) -> None:
    node = start_node(make_settings(quiet_seconds=0.5))
    study_uid = dicom.chest_image().StudyInstanceUID
    files = [dicom.save(dicom.chest_image(study_uid=study_uid), tmp_path / f"{i}.dcm") for i in range(2)]
    sent_at = time.monotonic()
    assert (
        dcmtk(
            "storescu",
            "-aet",
            "STORESCU",
            "-aec",
            "ECHO",
            "-R",
            "127.0.0.1",
            str(node.settings.port),
            *map(str, files),
        ).returncode
        == 0
    )
    wait_for(lambda: publisher.published, timeout_s=10, what="the study to be published")
    assert time.monotonic() - sent_at >= 0.5
    time.sleep(1.0)  # several more sweeps
    assert publisher.published == [1]


@pytest.mark.integration
def test_a_study_received_before_a_restart_is_queued_once_after_it(
    dcmtk, start_node, make_settings, dicom, publisher, tmp_path: Path, wait_for
) -> None:
    settings = make_settings(quiet_seconds=2.0)
    first = start_node(settings)
    path = dicom.save(dicom.chest_image(), tmp_path / "a.dcm")
    assert (
        dcmtk(
            "storescu", "-aet", "STORESCU", "-aec", "ECHO", "-R", "127.0.0.1", str(settings.port), str(path)
        ).returncode
        == 0
    )
    first.stop()  # well inside the quiet period: nothing queued yet
    assert publisher.published == []
    second = start_node(settings)
    wait_for(lambda: publisher.published, timeout_s=10, what="the study to be published after the restart")
    time.sleep(0.6)
    assert publisher.published == [1]
    assert second.database is not None
    with second.database.sessions() as session:
        queued = session.scalars(select(StudyEvent).where(StudyEvent.to_state == StudyState.QUEUED)).all()
    assert len(queued) == 1


@pytest.mark.integration
def test_an_association_left_open_by_a_dead_node_is_closed_and_its_study_queued(
    start_node, make_settings, dicom, publisher, wait_for, tmp_path: Path
) -> None:
    settings = make_settings(quiet_seconds=0.3)
    crashed = start_node(settings)
    assert crashed.database is not None
    parts = SimpleNamespace(
        ingestor=Ingestor(crashed.database.sessions, Spool(settings.spool_dir)),
        associations=AssociationLog(crashed.database.sessions),
    )
    # The dead process took an instance and never saw its association end.
    receive(parts, dicom)
    crashed.stop()
    time.sleep(0.6)
    assert publisher.published == []
    start_node(settings)
    wait_for(lambda: publisher.published == [1], timeout_s=10, what="the orphaned study to be published")


def test_the_node_passes_the_lateral_only_setting_to_assembly(start_node, make_settings) -> None:
    assert make_settings().draft_lateral_only is False
    node = start_node(make_settings(draft_lateral_only=True))
    assert node.assembler is not None and node.assembler.draft_lateral_only is True


# --- a frontal view after a draft read from a lateral (or from an image nothing marked) ------------

LATERAL_READ = "fallback: only lateral views in the study; instance 1 (View Position LL)"
UNKNOWN_READ = "fallback: no image is marked frontal; instance 1 has no view information (Body Part CHEST)"
FRONTAL_READ = "instance 1: View Position PA"


def drafted(db: Database, study_id: int, view_reason: str, state: StudyState = StudyState.DELIVERED) -> None:
    """What the worker and the outbox leave behind: a report read from the study's first instance (with
    `view_reason`), a succeeded inference attempt, the study moved queued -> inferred (-> delivered)."""
    with db.sessions.begin() as session:
        model = session.scalar(select(ModelVersion).limit(1))
        if model is None:
            model = ModelVersion(name="m", version="v", path="p", sha256="s", block_size=8, active=True)
            session.add(model)
            session.flush()
        instance_id = session.scalars(
            select(Instance.id).where(Instance.study_id == study_id).order_by(Instance.id)
        ).first()
        session.add(
            Report(
                study_id=study_id,
                model_version_id=model.id,
                findings="f",
                impression="i",
                text="t",
                tokens=1,
                forwards=1,
                seconds=0.1,
                instance_id=instance_id,
                view_reason=view_reason,
            )
        )
        attempt = 1 + len(list(session.scalars(select(Job.id).where(Job.study_id == study_id))))
        now = datetime.now(UTC)
        session.add(
            Job(
                study_id=study_id,
                kind=JobKind.INFER,
                attempt=attempt,
                state=JobState.SUCCEEDED,
                started_at=now,
            )
        )
        study = session.get_one(Study, study_id)
        transition(session, study, StudyState.INFERRED, "report drafted")
        if state is StudyState.DELIVERED:
            transition(session, study, StudyState.DELIVERED, "SR delivered")


def queued_drafted_study(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, db: Database, view: str | None, reason: str
) -> tuple[int, str]:
    """A study of one image (View Position `view`) drafted and delivered; returns (id, Study Instance UID)."""
    parts.assembler = StudyAssembler(
        db.sessions, QUIET, parts.assembler.publisher, clock, draft_lateral_only=True
    )
    study_id = deliver(parts, dicom, attributes={"ViewPosition": view})
    clock.advance(QUIET)
    assert parts.assembler.sweep().queued == [study_id]
    drafted(db, study_id, reason)
    return study_id, state_of(db, study_id).study_instance_uid


@pytest.mark.parametrize(("view", "reason"), [("LL", LATERAL_READ), (None, UNKNOWN_READ)])
@pytest.mark.parametrize("state", [StudyState.DELIVERED, StudyState.INFERRED])
def test_a_frontal_after_a_draft_read_from_a_non_frontal_queues_the_study_again(
    parts: SimpleNamespace,
    clock: Clock,
    dicom: SimpleNamespace,
    publisher,
    sqlite_db: Database,
    caplog,
    view: str | None,
    reason: str,
    state: StudyState,
) -> None:
    parts.assembler = StudyAssembler(sqlite_db.sessions, QUIET, publisher, clock, draft_lateral_only=True)
    study_id = deliver(parts, dicom, attributes={"ViewPosition": view})
    clock.advance(QUIET)
    assert parts.assembler.sweep().queued == [study_id]
    drafted(sqlite_db, study_id, reason, state)
    uid = state_of(sqlite_db, study_id).study_instance_uid

    clock.advance(20)  # the PA arrives 20 s after the draft
    with caplog.at_level("INFO", logger="node.dicom.ingest"):
        assert deliver(parts, dicom, study_uid=uid, modality="DX") == study_id

    study = state_of(sqlite_db, study_id)
    assert (study.state, study.enqueued_at) == (StudyState.QUEUED, None)
    assert events_of(sqlite_db, study_id)[-1] == (state, StudyState.QUEUED, REDRAFT_REASON)
    assert f"study {study_id} queued again: {REDRAFT_REASON}" in caplog.text
    assert parts.assembler.sweep().published == [study_id]  # published at once, no second quiet period
    assert publisher.published == [study_id, study_id]


def test_a_lateral_after_a_frontal_draft_is_stored_and_changes_nothing(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database, caplog
) -> None:
    study_id, uid = queued_drafted_study(parts, clock, dicom, sqlite_db, "PA", FRONTAL_READ)
    clock.advance(20)
    with caplog.at_level("INFO", logger="node.dicom.ingest"):
        assert deliver(parts, dicom, study_uid=uid, attributes={"ViewPosition": "LL"}) == study_id
        assert (
            deliver(parts, dicom, study_uid=uid, attributes={"ViewPosition": "AP"}) == study_id
        )  # another frontal
    assert state_of(sqlite_db, study_id).state is StudyState.DELIVERED
    assert events_of(sqlite_db, study_id)[-1][1] is StudyState.DELIVERED
    assert "stored, study not re-queued" in caplog.text
    assert parts.assembler.sweep().published == []
    with sqlite_db.sessions() as session:
        assert len(list(session.scalars(select(Instance.id).where(Instance.study_id == study_id)))) == 3


@pytest.mark.parametrize(
    ("attributes", "why"),
    [
        ({"ViewPosition": "LL"}, "another lateral"),
        ({"ViewPosition": None}, "a view nothing marks"),
        ({"ViewPosition": "PA", "PatientID": "OTHER-PATIENT"}, "another patient"),
        ({"ViewPosition": "PA", "BodyPartExamined": "HAND"}, "another body part"),
        ({"ViewPosition": "PA", "Modality": "PR"}, "not a radiograph"),
    ],
)
def test_only_a_frontal_chest_radiograph_of_the_same_patient_queues_a_lateral_draft_again(
    parts: SimpleNamespace,
    clock: Clock,
    dicom: SimpleNamespace,
    sqlite_db: Database,
    attributes: dict,
    why: str,
) -> None:
    study_id, uid = queued_drafted_study(parts, clock, dicom, sqlite_db, "LL", LATERAL_READ)
    assert deliver(parts, dicom, study_uid=uid, attributes=attributes) == study_id, why
    assert state_of(sqlite_db, study_id).state is StudyState.DELIVERED, why


def test_a_study_flagged_for_conflicting_instances_is_not_queued_again(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, sqlite_db: Database
) -> None:
    study_id, uid = queued_drafted_study(parts, clock, dicom, sqlite_db, "LL", LATERAL_READ)
    with sqlite_db.sessions.begin() as session:
        session.get_one(Study, study_id).identity_conflict = "instances disagree on IssuerOfPatientID"
    deliver(parts, dicom, study_uid=uid)  # a PA
    assert state_of(sqlite_db, study_id).state is StudyState.DELIVERED


def test_a_study_queued_again_for_a_corrected_draft_is_republished_after_a_restart(
    parts: SimpleNamespace, clock: Clock, dicom: SimpleNamespace, publisher, sqlite_db: Database
) -> None:
    """Its succeeded attempt drafted the old report: it is unfinished, unlike a study queued with one."""
    study_id, uid = queued_drafted_study(parts, clock, dicom, sqlite_db, "LL", LATERAL_READ)
    deliver(parts, dicom, study_uid=uid)  # the PA: queued again
    assert parts.assembler.sweep().published == [study_id]
    assert parts.assembler.republish_unfinished() == 1
    assert parts.assembler.sweep().published == [study_id]
