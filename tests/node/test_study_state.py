"""The study state machine: the table of legal moves, and transition() refusing everything else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from node.store.database import Database
from node.store.models import Study, StudyEvent
from node.store.redraft import REDRAFT_REASON, redraft_requested, request_redraft
from node.store.states import STUDY_TRANSITIONS, StudyState
from node.store.transitions import IllegalTransition, record_creation, transition


def _study(db: Database, state: StudyState = StudyState.RECEIVED) -> int:
    now = datetime.now(UTC)
    with db.sessions.begin() as session:
        study = Study(study_instance_uid="1.2.3.4", state=state, first_received_at=now, last_received_at=now)
        session.add(study)
        session.flush()
        record_creation(session, study, "test")
        return study.id


def test_the_happy_path_and_its_exits_are_exactly_these() -> None:
    assert {
        StudyState.RECEIVED: {StudyState.COMPLETE, StudyState.FAILED},
        StudyState.COMPLETE: {StudyState.QUEUED, StudyState.SKIPPED, StudyState.FAILED},
        StudyState.QUEUED: {StudyState.INFERRED, StudyState.FAILED},
        # back to queued: a frontal arrived after a draft read from a non-frontal view (re-drafted)
        StudyState.INFERRED: {StudyState.DELIVERED, StudyState.FAILED, StudyState.QUEUED},
        StudyState.DELIVERED: {StudyState.QUEUED},
        StudyState.SKIPPED: {StudyState.RECEIVED},  # reopened by a CR/DX instance
        StudyState.FAILED: {StudyState.QUEUED},
    } == STUDY_TRANSITIONS


def test_transition_moves_the_study_and_writes_its_audit_row(sqlite_db: Database) -> None:
    study_id = _study(sqlite_db)
    with sqlite_db.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        transition(session, study, StudyState.COMPLETE, "quiet")
        transition(session, study, "skipped", "modality CT is not CR or DX")
    with sqlite_db.sessions() as session:
        study = session.get_one(Study, study_id)
        events = session.scalars(
            select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id)
        )
        moves = [(e.from_state, e.to_state, e.reason) for e in events]
    assert study.state is StudyState.SKIPPED
    assert study.skip_reason == "modality CT is not CR or DX"
    assert moves == [
        (None, StudyState.RECEIVED, "test"),
        (StudyState.RECEIVED, StudyState.COMPLETE, "quiet"),
        (StudyState.COMPLETE, StudyState.SKIPPED, "modality CT is not CR or DX"),
    ]


def test_a_skipped_study_reopens_and_its_skip_reason_is_cleared(sqlite_db: Database) -> None:
    study_id = _study(sqlite_db)
    with sqlite_db.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        transition(session, study, StudyState.COMPLETE, "quiet")
        transition(session, study, StudyState.SKIPPED, "lateral view only: waiting for a frontal")
    with sqlite_db.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        transition(session, study, StudyState.RECEIVED, "a CR/DX instance arrived after the skip")
    with sqlite_db.sessions() as session:
        study = session.get_one(Study, study_id)
        reasons = [
            e.reason for e in session.scalars(select(StudyEvent).where(StudyEvent.study_id == study_id))
        ]
    assert (study.state, study.skip_reason) == (StudyState.RECEIVED, None)
    assert reasons[-2:] == [
        "lateral view only: waiting for a frontal",
        "a CR/DX instance arrived after the skip",
    ]


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (StudyState.RECEIVED, StudyState.QUEUED),
        (StudyState.RECEIVED, StudyState.DELIVERED),
        (StudyState.QUEUED, StudyState.RECEIVED),
        (StudyState.DELIVERED, StudyState.FAILED),
        (StudyState.DELIVERED, StudyState.RECEIVED),
        (StudyState.INFERRED, StudyState.RECEIVED),
        (StudyState.SKIPPED, StudyState.QUEUED),
    ],
)
def test_illegal_moves_are_refused_and_leave_no_trace(
    sqlite_db: Database, start: StudyState, target: StudyState
) -> None:
    study_id = _study(sqlite_db, start)
    with sqlite_db.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        with pytest.raises(IllegalTransition, match=f"{start} -> {target} is not allowed"):
            transition(session, study, target, "no")
    with sqlite_db.sessions() as session:
        assert session.get_one(Study, study_id).state is start
        assert len(list(session.scalars(select(StudyEvent).where(StudyEvent.study_id == study_id)))) == 1


def test_an_unknown_state_name_is_refused(sqlite_db: Database) -> None:
    study_id = _study(sqlite_db)
    with (
        sqlite_db.sessions.begin() as session,
        pytest.raises(ValueError, match="'finished' is not a valid StudyState"),
    ):
        transition(session, session.get_one(Study, study_id), "finished")


def test_a_move_made_meanwhile_by_another_process_makes_ours_fail(sqlite_db: Database) -> None:
    study_id = _study(sqlite_db)
    with sqlite_db.sessions() as stale_session:
        stale = stale_session.get_one(Study, study_id)  # sees "received"
        stale_session.commit()
        with sqlite_db.sessions.begin() as other:
            transition(other, other.get_one(Study, study_id), StudyState.COMPLETE, "other process")
        with pytest.raises(IllegalTransition, match="state changed from received by another process"):
            transition(stale_session, stale, StudyState.COMPLETE, "us")
        stale_session.rollback()
    with sqlite_db.sessions() as session:
        reasons = [
            e.reason for e in session.scalars(select(StudyEvent).where(StudyEvent.study_id == study_id))
        ]
    assert reasons == ["test", "other process"]


@pytest.mark.parametrize("start", [StudyState.INFERRED, StudyState.DELIVERED])
def test_a_drafted_study_goes_back_to_queued_for_a_corrected_draft(
    sqlite_db: Database, start: StudyState
) -> None:
    study_id = _study(sqlite_db, start)
    with sqlite_db.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        study.enqueued_at = datetime.now(UTC)
        request_redraft(session, study)
    with sqlite_db.sessions() as session:
        study = session.get_one(Study, study_id)
        last = session.scalars(
            select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id.desc())
        ).first()
        assert (study.state, study.enqueued_at) == (StudyState.QUEUED, None)  # the assembly loop publishes it
        assert last is not None and (last.from_state, last.to_state, last.reason) == (
            start,
            StudyState.QUEUED,
            REDRAFT_REASON,
        )
        assert redraft_requested(session, study_id)
