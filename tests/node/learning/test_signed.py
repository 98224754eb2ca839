"""Signed reports are stored once, matched to their study by accession then UID, and corrections kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from node.learning.signed import SignedReportIn, match_pending, store_signed
from node.store.models import SignedReport, Study
from node.store.states import SignedSource, StudyState

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def signed(
    key: str, accession: str | None = "A1", uid: str | None = None, status: str = "F", text: str = "x"
):
    return SignedReportIn(
        source=SignedSource.HL7,
        message_key=key,
        message_type="ORU^R01",
        findings=f"FINDINGS {text}",
        impression="No acute disease.",
        text=f"FINDINGS {text}\nIMPRESSION: No acute disease.",
        result_status=status,
        accession_number=accession,
        study_instance_uid=uid,
    )


def add_study(session, uid: str, accession: str | None) -> Study:
    study = Study(
        study_instance_uid=uid,
        accession_number=accession,
        state=StudyState.INFERRED,
        first_received_at=NOW,
        last_received_at=NOW,
    )
    session.add(study)
    session.flush()
    return study


def test_a_message_sent_twice_is_stored_once(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        first = store_signed(session, signed("RIS|1"))
        again = store_signed(session, signed("RIS|1", text="changed"))
        assert not first.duplicate and again.duplicate and again.row.id == first.row.id
        assert session.scalars(select(SignedReport)).all() == [first.row]


def test_a_report_is_matched_by_accession_before_uid(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        by_uid = add_study(session, "1.2.3", None)
        by_accession = add_study(session, "1.2.4", "A1")
        row = store_signed(session, signed("RIS|1", accession="A1", uid="1.2.3")).row
        assert row.study_id == by_accession.id and row.matched_at is not None
        only_uid = store_signed(session, signed("RIS|2", accession=None, uid="1.2.3")).row
        assert only_uid.study_id == by_uid.id


def test_a_report_that_arrives_before_its_study_is_matched_when_it_comes(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        row = store_signed(session, signed("RIS|1", accession="A9")).row
        assert row.study_id is None
        assert match_pending(session) == []
        study = add_study(session, "1.2.9", "A9")
        assert match_pending(session) == [row] and row.study_id == study.id


def test_a_correction_replaces_the_current_report_and_keeps_the_history(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        first = store_signed(session, signed("RIS|1", text="first")).row
        corrected = store_signed(session, signed("RIS|2", status="C", text="second"))
        assert corrected.replaced is first and first.replaced_by_id == corrected.row.id
        assert corrected.row.replaced_by_id is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"result_status": "P"}, "final"),
        ({"accession_number": None, "study_instance_uid": None}, "accession"),
        ({"findings": " ", "impression": ""}, "findings or an impression"),
        ({"message_key": ""}, "message key"),
    ],
)
def test_what_cannot_be_a_signed_report_is_refused(changes, message):
    fields = dict(
        source=SignedSource.HL7,
        message_key="k",
        message_type="ORU^R01",
        findings="f",
        impression="i",
        text="t",
        accession_number="A1",
    )
    with pytest.raises(ValueError, match=message):
        SignedReportIn(**{**fields, **changes})


def test_reports_whose_study_never_comes_do_not_crowd_out_newer_ones(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        for number in range(5):
            store_signed(session, signed(f"RIS|other{number}", accession=f"X{number}"))
        late = store_signed(session, signed("RIS|late", accession="A7")).row
        study = add_study(session, "1.2.7", "A7")
        assert match_pending(session, limit=2) == [late] and late.study_id == study.id


def test_two_reports_of_one_order_stored_at_once_leave_one_current_on_postgresql(postgres_url):
    """A final report and its correction on two connections at the same moment: the second store
    waits for the first transaction and replaces its report (without the per-order lock both read
    "no current report" and both stayed current)."""
    import threading
    import uuid

    from node.config.settings import load_settings
    from node.store.database import migrate, open_database

    database = open_database(load_settings(database_url=postgres_url))
    migrate(database.engine)
    accession = f"RACE-{uuid.uuid4().hex[:8]}"
    first_stored, second_done = threading.Event(), threading.Event()

    def store_second() -> None:
        first_stored.wait(10)
        with database.sessions.begin() as session:
            store_signed(session, signed(f"RIS|{accession}|2", accession=accession, status="C"), NOW)
        second_done.set()

    other = threading.Thread(target=store_second)
    other.start()
    try:
        with database.sessions.begin() as session:
            store_signed(session, signed(f"RIS|{accession}|1", accession=accession), NOW)
            first_stored.set()
            assert not second_done.wait(1.0)  # the second store waits for this transaction
        other.join(10)
        assert second_done.is_set()
        with database.sessions() as session:
            rows = session.scalars(
                select(SignedReport)
                .where(SignedReport.accession_number == accession)
                .order_by(SignedReport.id)
            ).all()
        assert [row.result_status for row in rows] == ["F", "C"]
        assert rows[0].replaced_by_id == rows[1].id and rows[1].replaced_by_id is None
    finally:
        other.join(10)
        database.dispose()
