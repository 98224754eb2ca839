"""One study's inference against a real (SQLite) database and spool, with an engine stand-in."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import Dataset
from pydicom.uid import JPEG2000Lossless
from sqlalchemy import select

from node.config.settings import Settings
from node.store.database import Database
from node.store.models import Delivery, Instance, Job, ModelVersion, Report, Study, StudyEvent
from node.store.states import DeliveryKind, DeliveryStatus, JobState, StudyState
from worker.failures import EngineUnavailable
from worker.inference import StudyInference, model_facts, register_model
from worker.pixel_budget import decoded_bytes, pixel_budget_problem

PACS = "PACS@127.0.0.1:11113"
RIS = "127.0.0.1:2575"


def make_inference(database: Database, settings: Settings, engine, model_error: Exception | None = None):
    def load():
        if model_error is not None:
            raise model_error
        return engine

    return StudyInference(
        database.sessions,
        settings,
        load,
        lambda loaded: register_model(database.sessions, model_facts(loaded)),
        stale_after=timedelta(seconds=360),
    )


def rows(database: Database, model, *where):
    with database.sessions() as session:
        return list(session.scalars(select(model).where(*where)))


def events(database: Database, study_id: int) -> list[tuple[StudyState | None, StudyState, str | None]]:
    with database.sessions() as session:
        found = session.scalars(
            select(StudyEvent).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id)
        )
        return [(event.from_state, event.to_state, event.reason) for event in found]


def test_reports_the_frontal_view_and_writes_the_outbox_in_one_go(
    database: Database, node_settings, store_study, images, engine
) -> None:
    lateral = images.chest(view_position="LL", instance_number=1)
    frontal = images.chest(study_uid=lateral.StudyInstanceUID, view_position="PA", instance_number=2)
    study_id = store_study(lateral, frontal)
    inference = make_inference(database, node_settings(pacs=PACS, ris=RIS), engine)

    result = inference.run(study_id, "task-1")

    assert result.outcome == "reported"
    [report] = rows(database, Report)
    [frontal_row] = rows(database, Instance, Instance.sop_instance_uid == frontal.SOPInstanceUID)
    assert engine.read == [Path(frontal_row.path)]
    assert (report.study_id, report.instance_id) == (study_id, frontal_row.id)
    assert report.findings == "Heart size is normal.\nNo pleural effusion."
    assert report.impression == "No acute cardiopulmonary process."
    assert report.text.startswith("FINDINGS: Heart size is normal.")
    assert (report.tokens, report.forwards, report.seconds) == (17, 3, 0.25)
    assert report.timings["vision"] == 0.1
    assert report.view_reason == "instance 2: View Position PA"
    deliveries = {row.kind: row for row in rows(database, Delivery)}
    assert result.delivery_ids == tuple(sorted(row.id for row in deliveries.values()))
    assert deliveries[DeliveryKind.SR].target == PACS
    assert re.fullmatch(r"[0-9.]{10,64}", deliveries[DeliveryKind.SR].message_id)
    assert deliveries[DeliveryKind.ORU].target == RIS
    assert re.fullmatch(r"[0-9a-f]{20}", deliveries[DeliveryKind.ORU].message_id)
    assert {row.status for row in deliveries.values()} == {DeliveryStatus.PENDING}
    assert {row.attempts for row in deliveries.values()} == {0}
    [job] = rows(database, Job)
    [model] = rows(database, ModelVersion)
    assert (job.state, job.model_version_id, job.celery_task_id) == (JobState.SUCCEEDED, model.id, "task-1")
    assert (model.name, model.version, model.block_size, model.active) == (
        "echo-test-student",
        "0123456789abcdef",
        8,
        True,
    )
    assert events(database, study_id)[-1] == (
        StudyState.QUEUED,
        StudyState.INFERRED,
        f"report {report.id} drafted; instance 2: View Position PA",
    )


def test_without_pacs_or_ris_the_report_is_stored_with_no_deliveries(
    database: Database, settings: Settings, store_study, images, engine
) -> None:
    study_id = store_study(images.chest())
    assert make_inference(database, settings, engine).run(study_id, "t").outcome == "reported"
    assert len(rows(database, Report)) == 1
    assert rows(database, Delivery) == []
    assert rows(database, Study)[0].state is StudyState.INFERRED


def test_the_same_study_twice_writes_one_report_and_one_delivery_each(
    database: Database, node_settings, store_study, images, engine
) -> None:
    study_id = store_study(images.chest())
    inference = make_inference(database, node_settings(pacs=PACS, ris=RIS), engine)
    inference.run(study_id, "task-1")
    again = inference.run(study_id, "task-2")
    assert again.outcome == "skipped"
    assert again.detail.startswith(f"study {study_id} is inferred, not queued")
    assert len(rows(database, Report)) == 1
    assert sorted(row.kind for row in rows(database, Delivery)) == [DeliveryKind.ORU, DeliveryKind.SR]
    assert len(engine.read) == 1


def test_a_requeued_study_reuses_its_report_for_the_same_model(
    database: Database, node_settings, store_study, images, engine
) -> None:
    """Idempotent on (study, model version) below the claim too: no second report, no new rows."""
    study_id = store_study(images.chest())
    inference = make_inference(database, node_settings(pacs=PACS), engine)
    first = inference.run(study_id, "task-1")
    with database.sessions.begin() as session:  # as if the first attempt had not been recorded as done
        session.get_one(Job, 1).state = JobState.FAILED
        study = session.get_one(Study, study_id)
        study.state = StudyState.QUEUED
    again = inference.run(study_id, "task-2")
    assert (again.outcome, again.report_id, again.delivery_ids) == (
        "reported",
        first.report_id,
        first.delivery_ids,
    )
    assert len(rows(database, Report)) == 1 and len(rows(database, Delivery)) == 1
    assert len(engine.read) == 1, "the report was reused, not generated again"
    assert events(database, study_id)[-1][2].startswith("report reused")


def test_generated_text_is_cleaned_before_it_is_stored(
    database: Database, settings: Settings, store_study, images, engine
) -> None:
    engine.findings = "Lungs\x1c are\tclear.\ufffd\x0b"
    engine.impression = "  Normal.  "
    make_inference(database, settings, engine).run(store_study(images.chest()), "t")
    [report] = rows(database, Report)
    assert (report.findings, report.impression) == ("Lungs are clear.", "Normal.")


def test_an_unreadable_image_fails_the_study_at_once(
    database: Database, settings: Settings, store_study, images, engine
) -> None:
    broken = images.chest()
    broken.file_meta.TransferSyntaxUID = JPEG2000Lossless
    broken.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x08\x00\x00\x00not-j2k!"
    broken["PixelData"].VR = "OB"
    broken["PixelData"].is_undefined_length = True
    study_id = store_study(broken)
    result = make_inference(database, settings, engine).run(study_id, "t")
    assert result.outcome == "failed"
    assert result.detail.startswith("the model cannot read the chosen image:")
    [job] = rows(database, Job)
    assert (job.state, job.error) == (JobState.FAILED, result.detail)
    assert rows(database, Study)[0].state is StudyState.FAILED
    assert events(database, study_id)[-1][2] == f"inference: {result.detail}"
    assert rows(database, Report) == []


def test_an_empty_report_fails_the_study(
    database: Database, settings: Settings, store_study, images, engine
) -> None:
    engine.findings, engine.impression = "\x1d\ufffd", " "
    study_id = store_study(images.chest())
    result = make_inference(database, settings, engine).run(study_id, "t")
    assert result.outcome == "failed"  # the draft gate sees both sections empty, even after a re-decode
    assert result.detail.startswith("draft gate: missing or empty section(s): FINDINGS, IMPRESSION")
    assert rows(database, Study)[0].state is StudyState.FAILED


def test_a_study_whose_files_left_the_spool_fails_with_the_reason(
    database: Database, settings: Settings, store_study, images, engine
) -> None:
    study_id = store_study(images.chest())
    [instance] = rows(database, Instance)
    Path(instance.path).unlink()
    result = make_inference(database, settings, engine).run(study_id, "t")
    assert (result.outcome, result.detail) == (
        "failed",
        f"no readable image: instance {instance.id}: file missing from the spool",
    )


def test_an_engine_that_cannot_load_is_transient(
    database: Database, settings: Settings, store_study, images, engine
) -> None:
    study_id = store_study(images.chest())
    inference = make_inference(
        database, settings, engine, EngineUnavailable("cannot load the model at /m: gone")
    )
    with pytest.raises(EngineUnavailable, match="cannot load the model at /m: gone"):
        inference.run(study_id, "t")
    [job] = rows(database, Job)
    assert (job.state, job.error) == (
        JobState.FAILED,
        "will retry: EngineUnavailable: cannot load the model at /m: gone",
    )
    assert rows(database, Study)[0].state is StudyState.QUEUED, "left for the retry"


def test_a_second_model_becomes_the_active_one(database: Database, engine) -> None:
    first = register_model(database.sessions, model_facts(engine))
    engine.manifest.version = "fedcba9876543210"
    second = register_model(database.sessions, model_facts(engine))
    assert register_model(database.sessions, model_facts(engine)) == second
    with database.sessions() as session:
        active = {row.id: row.active for row in session.scalars(select(ModelVersion))}
    assert active == {first: False, second: True}


def test_an_image_over_the_pixel_budget_is_refused_before_it_is_decoded(
    database: Database, node_settings, store_study, images, engine
) -> None:
    """64 x 64 x 16-bit x 300 frames = 2.3 MiB decoded, over a 2 MiB budget: never read, never retried."""
    study_id = store_study(images.chest(NumberOfFrames=300, PixelData=bytes(64 * 64 * 2 * 300)))
    result = make_inference(database, node_settings(max_pixel_megabytes=2), engine).run(study_id, "t")
    assert (result.outcome, result.detail) == (
        "failed",
        "the chosen image is too large to decode: 64 x 64 pixels x 300 frame(s) x 1 sample(s) x "
        "2 byte(s) = 2.3 MiB, over the 2.0 MiB budget (ECHO_MAX_PIXEL_MEGABYTES)",
    )
    assert engine.read == []
    [job] = rows(database, Job)
    assert (job.state, job.error) == (JobState.FAILED, result.detail)
    assert rows(database, Study)[0].state is StudyState.FAILED
    assert events(database, study_id)[-1][2] == f"inference: {result.detail}"


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"Rows": 4096, "Columns": 4096, "BitsAllocated": 16}, 32 * 2**20),
        ({"Rows": 100, "Columns": 100, "BitsAllocated": 8, "SamplesPerPixel": 3}, 30_000),
        ({"Rows": 10, "Columns": 10, "BitsAllocated": 12, "NumberOfFrames": "7"}, 1_400),
        ({"Rows": 10, "Columns": 10, "BitsAllocated": 1}, 100),
        ({"Columns": 10}, None),  # no Rows: the image reader gives its own reason
        ({"Rows": 0, "Columns": 10}, None),
    ],
)
def test_decoded_size_is_read_from_the_header(attributes: dict[str, object], expected: int | None) -> None:
    header = Dataset()
    for keyword, value in attributes.items():
        setattr(header, keyword, value)
    assert decoded_bytes(header) == expected
    over = pixel_budget_problem(header, 99)
    assert (over is not None) == (expected is not None and expected > 99)


def test_no_identifier_reaches_the_log(
    database: Database, node_settings, store_study, images, engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The node's study id only: no accession, patient id or name, no header text (issue 15, item 11)."""
    frontal = images.chest(view_position=None, SeriesDescription="PA CHEST SMITH WARD 7")
    study_id = store_study(frontal)
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # what ingest logs is not this test's business
    result = make_inference(database, node_settings(pacs=PACS, ris=RIS), engine).run(study_id, "t")
    assert result.outcome == "reported"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"study {study_id}: report {result.report_id} stored, 2 deliveries" in logged
    for identifier in ("ACC0042", "MRN0042", "Doe", "SMITH", frontal.StudyInstanceUID[-12:]):
        assert identifier not in logged


def test_the_attempt_records_its_process_and_beats_while_the_engine_works(
    database: Database, node_settings, store_study, images, engine
) -> None:
    generate = engine.generate
    beats = []

    def slow(image):
        time.sleep(0.5)
        with database.sessions() as session:
            beats.append(session.scalars(select(Job.heartbeat_at)).one())
        return generate(image)

    engine.generate = slow
    settings = node_settings(heartbeat_timeout_seconds=0.3)  # a beat every 50 ms
    study_id = store_study(images.chest())
    assert make_inference(database, settings, engine).run(study_id, "t").outcome == "reported"
    [job] = rows(database, Job)
    assert (job.worker_host, job.worker_pid) == (socket.gethostname(), os.getpid())
    assert beats[0] > job.started_at + timedelta(seconds=0.3), "the heartbeat went on during generate"


@pytest.mark.parametrize(
    ("first_views", "later_views", "new_revision"),
    [
        (["LL"], ["LL"], False),  # only another lateral: nothing better to read
        (["LL"], [None], False),  # an image with no view information is no frontal either
        (["PA"], ["AP"], False),  # drafted from a frontal already
        (["LL"], ["PA"], True),  # the frontal arrived: revision 2 from it
        ([None], ["AP"], True),  # the first draft read an unmarked image
    ],
)
def test_a_new_revision_only_when_a_frontal_replaces_a_non_frontal_read(
    database: Database,
    node_settings,
    store_study,
    images,
    engine,
    first_views: list[str | None],
    later_views: list[str | None],
    new_revision: bool,
) -> None:
    first = [images.chest(view_position=view, instance_number=1) for view in first_views]
    study_id = store_study(*first)
    inference = make_inference(database, node_settings(pacs=PACS), engine)
    drafted = inference.run(study_id, "task-1")
    later = [
        images.chest(study_uid=first[0].StudyInstanceUID, view_position=view, instance_number=2)
        for view in later_views
    ]
    store_study(*later, state=StudyState.RECEIVED)
    with database.sessions.begin() as session:  # queued again, whatever the node decided
        for job in session.scalars(select(Job).where(Job.study_id == study_id)):
            job.state = JobState.FAILED
        session.get_one(Study, study_id).state = StudyState.QUEUED

    again = inference.run(study_id, "task-2")

    reports = rows(database, Report)
    if new_revision:
        assert again.report_id != drafted.report_id
        assert [(r.revision, r.supersedes_id) for r in reports] == [(1, None), (2, drafted.report_id)]
        assert len(engine.read) == 2 and len(rows(database, Delivery)) == 2
    else:
        assert again.report_id == drafted.report_id
        assert [(r.revision, r.supersedes_id) for r in reports] == [(1, None)]
        assert len(engine.read) == 1 and len(rows(database, Delivery)) == 1


def test_a_broken_draft_is_decoded_again_and_the_fixed_one_is_stored(
    database, node_settings, store_study, images, engine
) -> None:
    inference = make_inference(database, node_settings(pacs="PACS@127.0.0.1:11113"), engine)
    engine.findings = "Heart size is is normal."  # one-step's failure: adjacent duplicated words
    engine.redecoded_findings = "Heart size is normal."
    study_id = store_study(images.chest())

    result = inference.run(study_id, "task-gate-1")

    assert result.outcome == "reported", result.detail
    assert engine.decodes == ["onestep", "multistep"]
    with database.sessions() as session:
        report = session.scalars(select(Report)).one()
    assert (report.findings, report.gate) == ("Heart size is normal.", "redecoded")
    assert report.decoding.startswith("multistep")
    # what the draft cost: both decodes (3 forwards and 0.25 s each), not only the one sent
    assert (report.tokens, report.forwards, report.seconds) == (17, 6, 0.5)
    assert report.timings == {"preprocess": 0.1, "vision": 0.2, "prefill": 0.1, "decode": 0.1, "total": 0.5}


def test_a_draft_that_stays_broken_is_never_stored_or_sent(
    database, node_settings, store_study, images, engine
) -> None:
    inference = make_inference(database, node_settings(pacs="PACS@127.0.0.1:11113"), engine)
    engine.findings = "Heart size is is normal."  # and the re-decode writes the same
    study_id = store_study(images.chest())

    result = inference.run(study_id, "task-gate-2")

    assert result.outcome == "failed"
    assert result.detail.startswith("draft gate: 1 adjacent duplicated word(s): 'is is'")
    assert result.detail.endswith("no draft sent")
    with database.sessions() as session:
        assert session.scalars(select(Report)).all() == []
        assert session.scalars(select(Delivery)).all() == []
        assert session.get_one(Study, study_id).state is StudyState.FAILED
        # The attempt names the model whose draft was held (which model a site's failures come from).
        [job] = session.scalars(select(Job).where(Job.study_id == study_id)).all()
        assert job.model_version_id is not None


def test_a_clean_draft_passes_the_gate_at_once(database, settings, store_study, images, engine) -> None:
    inference = make_inference(database, settings, engine)
    study_id = store_study(images.chest())
    assert inference.run(study_id, "task-gate-3").outcome == "reported"
    assert engine.decodes == ["onestep"]
    with database.sessions() as session:
        report = session.scalars(select(Report)).one()
    assert (report.gate, report.decoding) == ("passed", "onestep")


def test_echo_admin_status_counts_the_gate_s_decisions(
    database, settings, store_study, images, engine
) -> None:
    from node.ops.overview import draft_gate_counts, drafts_by_redecode_model

    inference = make_inference(database, settings, engine)
    inference.run(store_study(images.chest()), "passes")
    engine.findings, engine.redecoded_findings = "Heart is is normal.", "Heart is normal."
    inference.run(store_study(images.chest()), "fixed")
    engine.redecoded_findings = None
    inference.run(store_study(images.chest()), "held")
    with database.sessions() as session:
        assert draft_gate_counts(session) == {"passed": 1, "redecoded": 1, "held": 1}
        assert drafts_by_redecode_model(session) == 0


def test_echo_admin_status_counts_the_drafts_the_teacher_wrote(
    database, settings, store_study, images, engine, tmp_path
) -> None:
    from node.ops.overview import draft_gate_counts, drafts_by_redecode_model

    engine.findings = "Heart is is normal."  # every one-step draft fails; the teacher's pass
    teacher = SimpleNamespace(name="teacher", version="7e11", generation=SimpleNamespace(block_size=8))
    engine.redecoder = type(engine)(tmp_path, manifest=teacher)  # a stand-in whose drafts are clean
    inference = make_inference(database, settings, engine)
    assert inference.run(store_study(images.chest()), "teacher").outcome == "reported"
    with database.sessions() as session:
        report = session.scalars(select(Report)).one()
        assert report.decoding == "onestep by teacher 7e11" and report.gate == "redecoded"
        assert draft_gate_counts(session)["redecoded"] == drafts_by_redecode_model(session) == 1
