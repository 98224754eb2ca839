"""Draft quality summed per model version and week, from score rows and from the database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from node.learning.quality import (
    ModelRef,
    ScoreRow,
    UnknownModel,
    aggregate,
    current_scores,
    iso_week,
    load_scores,
    matching_models,
    quality_report,
)
from node.store.models import DraftScore, ModelVersion, Report, SignedReport, Study
from node.store.states import SignedSource, StudyState

OLD = ModelRef(1, "student", "aaaaaaaa1111")
NEW = ModelRef(2, "student", "bbbbbbbb2222")
MONDAY = datetime(2026, 11, 30, 9, tzinfo=UTC)  # ISO 2026-W49
NEXT_MONDAY = datetime(2026, 12, 7, 9, tzinfo=UTC)  # 2026-W50


def row(
    study,
    tp,
    fp,
    fn,
    *,
    model=OLD,
    normal=False,
    distance=0.0,
    changed=False,
    at=MONDAY,
    revision=1,
    signed=1,
):
    return ScoreRow(
        study_id=study,
        report_id=study * 10 + revision,
        revision=revision,
        signed_report_id=signed,
        model=model,
        drafted_at=at,
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        signed_normal=normal,
        edit_distance=distance,
        impression_changed=changed,
    )


FIXTURE = [
    row(1, 2, 0, 0, distance=0.0),  # both findings right
    row(2, 1, 1, 1, distance=0.5, changed=True),
    row(3, 0, 2, 0, normal=True, distance=0.4, changed=True),  # two findings drafted on a normal study
    row(4, 0, 0, 0, normal=True, distance=0.1, at=NEXT_MONDAY),  # a normal study called normal
    row(5, 1, 0, 0, model=NEW, distance=0.2),
]


def test_the_figures_per_model_version():
    old, new = aggregate(FIXTURE)
    # old: tp 3, fp 3, fn 1 -> precision 0.5, recall 0.75, F1 0.6
    assert (old.model, old.week, old.studies) == (OLD, None, 4)
    assert (old.precision, old.recall, old.f1) == pytest.approx((0.5, 0.75, 0.6))
    assert (old.normal_studies, old.false_positives_per_normal) == (2, 1.0)
    assert old.mean_edit_distance == pytest.approx(0.25)
    assert old.impression_changed_share == pytest.approx(0.5)
    assert (new.model, new.studies, new.f1, new.normal_studies, new.false_positives_per_normal) == (
        NEW,
        1,
        1.0,
        0,
        None,
    )


def test_by_week_splits_a_model_version_by_the_week_its_drafts_were_written():
    rows = aggregate(FIXTURE, by_week=True)
    assert [(r.model.id, r.week, r.studies) for r in rows] == [
        (1, "2026-W49", 3),
        (1, "2026-W50", 1),
        (2, "2026-W49", 1),
    ]
    week_50 = rows[1]
    assert (week_50.false_positives_per_normal, week_50.f1, week_50.mean_edit_distance) == (0.0, 0.0, 0.1)
    assert iso_week(datetime(2027, 1, 1, tzinfo=UTC)) == "2026-W53"


def test_a_study_counts_once_with_its_latest_draft_against_its_newest_signed_report():
    history = [
        row(7, 0, 1, 0, revision=1, signed=1),
        row(7, 0, 1, 0, revision=1, signed=2),  # the first draft against a correction
        row(7, 1, 0, 0, revision=2, signed=2),  # the study drafted again
        row(7, 1, 0, 0, model=NEW, revision=3, signed=2),  # and by another model
    ]
    kept = current_scores(history)
    assert [(r.model.id, r.revision, r.signed_report_id) for r in kept] == [(1, 2, 2), (2, 3, 2)]
    (old, new) = aggregate(history)
    assert (old.studies, old.f1, new.studies) == (1, 1.0, 1)


def test_no_rows_no_figures():
    assert aggregate([]) == []


@pytest.mark.parametrize(
    ("spec", "ids"),
    [("1", [1]), ("student", [1, 2]), ("bbbbbbbb2222", [2]), ("aaaa", [1]), ("aa", []), ("nope", [])],
)
def test_a_model_is_named_by_id_name_version_or_the_start_of_its_version(spec, ids):
    assert [m.id for m in matching_models([OLD, NEW], spec)] == ids


def test_the_database_side_reads_current_scores_and_filters_by_model_and_day(sqlite_db):
    with sqlite_db.sessions.begin() as session:
        models = [
            ModelVersion(name="student", version=v, path="/m", sha256="0" * 64, block_size=8)
            for v in ("v1-old", "v2-new")
        ]
        session.add_all(models)
        session.flush()
        for n, (model, at) in enumerate(((models[0], MONDAY), (models[1], NEXT_MONDAY))):
            study = Study(
                study_instance_uid=f"1.2.{n}",
                accession_number=f"Q{n}",
                state=StudyState.DELIVERED,
                first_received_at=at,
                last_received_at=at,
            )
            session.add(study)
            session.flush()
            report = Report(
                study_id=study.id,
                model_version_id=model.id,
                findings="f",
                impression="i",
                text="t",
                tokens=1,
                forwards=1,
                seconds=0.1,
                created_at=at,
            )
            signed = SignedReport(
                source=SignedSource.IMPORT,
                message_key=f"k{n}",
                message_type="import",
                accession_number=f"Q{n}",
                study_id=study.id,
                result_status="F",
                findings="f",
                impression="i",
                text="t",
            )
            session.add_all([report, signed])
            session.flush()
            session.add(
                DraftScore(
                    report_id=report.id,
                    signed_report_id=signed.id,
                    model_version_id=model.id,
                    true_positives=1,
                    false_positives=n,
                    false_negatives=0,
                    signed_normal=False,
                    edit_distance=0.5,
                    impression_changed=True,
                )
            )
    with sqlite_db.sessions() as session:
        loaded = load_scores(session)
        assert [(r.model.version, r.drafted_at, r.false_positives) for r in loaded] == [
            ("v1-old", MONDAY, 0),
            ("v2-new", NEXT_MONDAY, 1),
        ]
        assert [
            r.model.version for r in quality_report(session, since=datetime(2026, 12, 1, tzinfo=UTC))
        ] == ["v2-new"]
        assert [r.f1 for r in quality_report(session, model="v1-old")] == [1.0]
        with pytest.raises(UnknownModel, match="no model version is called 'v9'"):
            quality_report(session, model="v9")
        # a correction arrives: the score against the replaced report no longer counts
        first = session.scalars(select(SignedReport).order_by(SignedReport.id)).first()
        correction = SignedReport(
            source=SignedSource.IMPORT,
            message_key="k0-corrected",
            message_type="import",
            accession_number="Q0",
            study_id=first.study_id,
            result_status="C",
            findings="f",
            impression="i",
            text="t",
        )
        session.add(correction)
        session.flush()
        first.replaced_by_id = correction.id
        session.flush()
        assert [r.model.version for r in quality_report(session)] == ["v2-new"]
