"""Drafts scored against signed reports: the figures on hand-made texts, and which pairs get scored."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from echo.metrics.findings_f1 import f1_from_labels, positive_counts
from echo.metrics.labeler import label_report
from node.config.settings import load_settings
from node.learning.scoring import (
    Tick,
    compare,
    count_pending,
    learning_tick,
    score_pending,
    store_score,
    word_edit_distance,
)
from node.learning.signed import SignedReportIn, store_signed
from node.store.database import migrate, open_database
from node.store.models import DraftScore, ModelVersion, Report, SignedReport, Study
from node.store.states import SignedSource, StudyState

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NORMAL = ("Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.", "No acute disease.")
EFFUSION = (
    "Heart size is normal. Small left pleural effusion. No pneumothorax.",
    "Small left pleural effusion.",
)

# --- the figures of one pair ---------------------------------------------------------------------


def test_a_drafted_effusion_the_radiologist_removed_is_a_false_positive_on_a_normal_study():
    figures = compare(*EFFUSION, *NORMAL)
    assert (figures.true_positives, figures.false_positives, figures.false_negatives) == (0, 1, 0)
    assert figures.signed_normal
    assert figures.draft_labels["pleural_effusion"] == "positive"
    assert figures.signed_labels["pleural_effusion"] == "negative"
    assert figures.impression_changed and 0 < figures.edit_distance < 1


def test_a_finding_the_draft_missed_is_a_false_negative_and_one_it_named_a_true_positive():
    draft = ("Small left pleural effusion. Heart size is normal.", "Left effusion.")
    signed = ("Small left pleural effusion. Right upper lobe consolidation.", "Effusion and pneumonia.")
    figures = compare(*draft, *signed)
    assert (figures.true_positives, figures.false_positives, figures.false_negatives) == (1, 0, 1)
    assert not figures.signed_normal


def test_a_draft_signed_unchanged_has_distance_zero_and_the_same_impression():
    figures = compare(*EFFUSION, *EFFUSION)
    assert figures.edit_distance == 0.0 and not figures.impression_changed
    assert (figures.true_positives, figures.false_positives, figures.false_negatives) == (1, 0, 0)
    assert figures.draft_labels == figures.signed_labels


def test_case_and_punctuation_are_not_changed_words():
    findings, impression = EFFUSION
    figures = compare(findings, impression, findings.upper().replace(".", ""), impression.lower() + "!")
    assert figures.edit_distance == 0.0 and not figures.impression_changed


@pytest.mark.parametrize(
    ("draft", "signed", "distance"),
    [
        ("a b c", "a b c", 0.0),
        ("a b c", "a x c d", 0.5),  # one substitution, one insertion, over 4 words
        ("a b c d", "", 1.0),
        ("", "", 0.0),
        ("a b", "b a", 1.0),
    ],
)
def test_word_edit_distance_is_levenshtein_over_the_longer_text(draft, signed, distance):
    assert word_edit_distance(draft.split(), signed.split()) == pytest.approx(distance)


def test_per_pair_counts_add_up_to_the_f1_the_benchmarks_report():
    drafts = [EFFUSION, NORMAL, ("Cardiomegaly. Small right effusion.", "Cardiomegaly.")]
    signed = [NORMAL, EFFUSION, ("Cardiomegaly. Pulmonary edema.", "Cardiomegaly and edema.")]
    pred = [label_report(" ".join(pair)) for pair in drafts]
    ref = [label_report(" ".join(pair)) for pair in signed]
    summed = [sum(column) for column in zip(*map(positive_counts, pred, ref), strict=True)]
    whole = f1_from_labels(pred, ref)
    tp, fp, fn = summed
    assert (tp / (tp + fp), tp / (tp + fn)) == pytest.approx((whole.micro_precision, whole.micro_recall))


def test_importing_the_scorer_loads_no_torch():
    code = "import sys, node.learning.scoring, node.learning.quality; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- which pairs are scored ----------------------------------------------------------------------


class Site:
    """Studies, drafts and signed reports written straight into a database."""

    def __init__(self, session):
        self.session = session
        self.tag = uuid.uuid4().hex[:8]
        self.model = ModelVersion(
            name=f"student-{self.tag}", version=self.tag * 2, path="/m", sha256="0" * 64, block_size=8
        )
        session.add(self.model)
        session.flush()
        self.keys = 0

    def study(self, accession: str) -> Study:
        study = Study(
            study_instance_uid=f"1.2.{uuid.uuid4().int % 10**12}",
            accession_number=f"{accession}{self.tag}"[:16],
            state=StudyState.DELIVERED,
            first_received_at=NOW,
            last_received_at=NOW,
        )
        self.session.add(study)
        self.session.flush()
        return study

    def draft(self, study: Study, sections: tuple[str, str], revision: int = 1) -> Report:
        findings, impression = sections
        report = Report(
            study_id=study.id,
            model_version_id=self.model.id,
            findings=findings,
            impression=impression,
            text=f"FINDINGS: {findings}\nIMPRESSION: {impression}",
            tokens=40,
            forwards=5,
            seconds=0.1,
            revision=revision,
            created_at=NOW,
        )
        self.session.add(report)
        self.session.flush()
        return report

    def sign(self, accession: str, sections: tuple[str, str], status: str = "F") -> SignedReport:
        findings, impression = sections
        self.keys += 1
        incoming = SignedReportIn(
            source=SignedSource.HL7,
            message_key=f"RIS|{self.tag}|{self.keys}",
            message_type="ORU^R01",
            findings=findings,
            impression=impression,
            text=f"{findings}\n{impression}",
            result_status=status,
            accession_number=f"{accession}{self.tag}"[:16],
        )
        return store_signed(self.session, incoming, NOW).row


def scores(session, *reports: Report) -> list[tuple[int, int]]:
    """(report id, signed report id) of the scores of these drafts, in the order stored."""
    query = (
        select(DraftScore).where(DraftScore.report_id.in_([r.id for r in reports])).order_by(DraftScore.id)
    )
    return [(row.report_id, row.signed_report_id) for row in session.scalars(query)]


def test_a_matched_signed_report_scores_the_draft_once(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        site = Site(session)
        draft = site.draft(site.study("A1"), EFFUSION)
        signed = site.sign("A1", NORMAL)
        assert count_pending(session) == 1
        assert score_pending(session, now=NOW) == 1
        assert score_pending(session, now=NOW) == 0  # idempotent
        assert scores(session, draft) == [(draft.id, signed.id)]
        row = session.scalars(select(DraftScore)).one()
        assert (row.false_positives, row.signed_normal, row.model_version_id) == (1, True, site.model.id)
        assert row.scored_at == NOW


def test_an_unmatched_report_and_a_study_without_a_draft_are_not_scored_until_they_can_be(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        site = Site(session)
        waiting = site.sign("A2", NORMAL)  # before its study arrives
        undrafted = site.study("A3")
        site.sign("A3", NORMAL)
        assert waiting.study_id is None and score_pending(session) == 0
        study = site.study("A2")
        draft = site.draft(study, NORMAL)
    assert learning_tick(sqlite_db.sessions) == Tick(matched=1, scored=1)
    with sqlite_db.sessions.begin() as session:
        assert scores(session, draft) == [(draft.id, waiting.id)]
        site.session = session
        later = site.draft(session.get_one(Study, undrafted.id), NORMAL)
    assert learning_tick(sqlite_db.sessions) == Tick(matched=0, scored=1)
    assert learning_tick(sqlite_db.sessions) == Tick(matched=0, scored=0)
    with sqlite_db.sessions() as session:
        assert len(scores(session, later)) == 1


def test_a_correction_gets_its_own_score_and_the_first_stays_as_history(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        site = Site(session)
        draft = site.draft(site.study("A4"), EFFUSION)
        first = site.sign("A4", NORMAL)
        assert score_pending(session) == 1
        corrected = site.sign("A4", EFFUSION, status="C")
        assert score_pending(session) == 1
        assert scores(session, draft) == [(draft.id, first.id), (draft.id, corrected.id)]
        newest = session.scalars(select(DraftScore).order_by(DraftScore.id.desc())).first()
        assert (newest.false_positives, newest.true_positives, newest.edit_distance) == (0, 1, 0.0)


def test_a_study_drafted_again_has_its_new_draft_scored_against_the_current_report(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        site = Site(session)
        study = site.study("A5")
        first = site.draft(study, EFFUSION)
        signed = site.sign("A5", NORMAL)
        assert score_pending(session) == 1
        second = site.draft(study, NORMAL, revision=2)
        assert score_pending(session) == 1
        assert scores(session, first, second) == [(first.id, signed.id), (second.id, signed.id)]


def test_only_the_latest_draft_of_a_study_is_scored(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        site = Site(session)
        study = site.study("A6")
        first = site.draft(study, EFFUSION)
        second = site.draft(study, NORMAL, revision=2)
        site.sign("A6", NORMAL)
        assert score_pending(session) == 1
        assert scores(session, first) == [] and len(scores(session, second)) == 1


def test_the_tick_works_in_batches_one_transaction_each(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        site = Site(session)
        for n in range(5):
            site.draft(site.study(f"B{n}"), NORMAL)
            site.sign(f"B{n}", NORMAL)
    batches: list[Tick] = []
    assert learning_tick(sqlite_db.sessions, batch=2, on_batch=batches.append) == Tick(0, 5)
    assert [tick.scored for tick in batches] == [2, 2, 1]


def _race_lost(database):
    """Another process scores the pair between this one's look-up and its insert."""
    with database.sessions.begin() as session:
        site = Site(session)
        draft = site.draft(site.study("R1"), EFFUSION)
        signed = site.sign("R1", NORMAL)
    with database.sessions.begin() as other:
        assert (
            store_score(other, other.get_one(Report, draft.id), other.get_one(SignedReport, signed.id))
            is not None
        )
    with database.sessions.begin() as session:
        lost = store_score(
            session, session.get_one(Report, draft.id), session.get_one(SignedReport, signed.id)
        )
        assert lost is None
        assert scores(session, draft) == [(draft.id, signed.id)]  # the session is still usable


def test_a_pair_scored_by_another_process_first_is_left_as_it_is(sqlite_db):
    _race_lost(sqlite_db)


@pytest.mark.integration
def test_on_postgresql_a_lost_race_and_concurrent_ticks_score_each_pair_once(postgres_url):
    database = open_database(load_settings(database_url=postgres_url))
    migrate(database.engine)
    try:
        _race_lost(database)
        with database.sessions.begin() as session:
            site = Site(session)
            drafts = []
            for n in range(30):
                drafts.append(site.draft(site.study(f"C{n}"), EFFUSION if n % 2 else NORMAL))
                site.sign(f"C{n}", NORMAL)
        errors: list[BaseException] = []

        def tick() -> None:
            try:
                learning_tick(database.sessions, batch=7)
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

        threads = [threading.Thread(target=tick) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        with database.sessions() as session:
            stored = scores(session, *drafts)
            assert sorted(report for report, _ in stored) == sorted(d.id for d in drafts)
    finally:
        database.dispose()
