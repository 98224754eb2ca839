"""Several studies drafted in one engine pass (worker.batch, ECHO_GPU_BATCH > 1), against a real
(SQLite) database and spool: each study keeps its own claim, checks, gate decision and transaction."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from pydicom.uid import JPEG2000Lossless
from sqlalchemy import select, update

from echo.runtime.images import display_pixels
from echo.runtime.result import GeneratedReport
from node.broker.app import INFER_STUDY
from node.config.settings import Settings, SettingsError, load_settings
from node.delivery.identity import thawed_header
from node.store.database import Database
from node.store.jobs import Liveness, WorkerProcess
from node.store.models import Instance, Job, Report, Study, StudyEvent
from node.store.reconcile import ReconcilePolicy, reconcile
from node.store.states import JobState, StudyState
from worker.app import create_worker_app
from worker.batch import BatchInference
from worker.failures import EngineUnavailable
from worker.inference import StudyInference, model_facts, register_model

PACS = "PACS@127.0.0.1:11113"
GONE_PID = 2**22 + 12345  # above Linux's pid_max default: no such process


def fingerprint(pixels: np.ndarray) -> int:
    """Which image the engine read, as a number (the same for a path and for its display pixels)."""
    return zlib.crc32(np.round(pixels * 4095).astype(np.uint16).tobytes())


@dataclass
class BatchingEngine:
    """Stands in for echo.runtime.Engine with generate_batch: each draft names its image's fingerprint
    (so a report shows which image it was read from); the one-step draft of a fingerprint in `broken`
    has a duplicated word, which the gate's multi-step re-decode does not."""

    model_dir: Path
    broken: set[int] = field(default_factory=set)
    batch_error: BaseException | None = None
    batches: list[list[int]] = field(default_factory=list)  # the fingerprints of each generate_batch
    alone: list[tuple[int, str]] = field(default_factory=list)  # (fingerprint, decode) of each generate
    manifest: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(
            name="echo-test-student", version="0123456789abcdef", generation=SimpleNamespace(block_size=8)
        )
    )

    def generate(self, image: object, **options: object) -> GeneratedReport:
        decode = str(options.get("decode") or "onestep")
        pixels = display_pixels(image)  # a bad image fails as the engine's reader fails
        self.alone.append((fingerprint(pixels), decode))
        return self._draft(pixels, decode)

    def generate_batch(self, images: list[object], **_: object) -> list[GeneratedReport]:
        if self.batch_error is not None:
            raise self.batch_error
        pixels = [display_pixels(image) for image in images]
        self.batches.append([fingerprint(each) for each in pixels])
        return [self._draft(each, "onestep") for each in pixels]

    def _draft(self, pixels: np.ndarray, decode: str) -> GeneratedReport:
        seen = fingerprint(pixels)
        words = "is is" if decode == "onestep" and seen in self.broken else "is"
        findings, impression = f"Pattern {seen} {words} seen.", "No acute process."
        return GeneratedReport(
            findings=findings,
            impression=impression,
            text=f"FINDINGS: {findings}\nIMPRESSION: {impression}",
            tokens=9,
            token_ids=tuple(range(9)),
            forwards=2,
            seconds=0.1,
            timings={"total": 0.1},
            model_version=self.manifest.version,
            decode=decode,
        )


@pytest.fixture
def batching(engine) -> BatchingEngine:
    """The batching stand-in in the model directory of the conftest's `engine`."""
    return BatchingEngine(engine.model_dir)


def make_inference(database: Database, settings: Settings, engine, **options) -> StudyInference:
    return StudyInference(
        database.sessions,
        settings,
        options.pop("load", lambda: engine),
        lambda loaded: register_model(database.sessions, model_facts(loaded)),
        stale_after=timedelta(seconds=360),
        **options,
    )


def studies(store_study, images, count: int, *, unusable: int | None = None) -> list[int]:
    """`count` queued studies, published oldest first, each with its own patient (MRN0001, ...) and
    pixel pattern; the one at index `unusable` has pixel data the model cannot read."""
    ids = []
    for index in range(count):
        pattern = ((np.arange(64 * 64, dtype=np.uint16) * (index + 3)) % 4096).tobytes()
        image = images.chest(
            patient_id=f"MRN{index + 1:04d}", accession=f"ACC{index + 1:04d}", PixelData=pattern
        )
        if index == unusable:
            image.file_meta.TransferSyntaxUID = JPEG2000Lossless
            image.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x08\x00\x00\x00not-j2k!"
            image["PixelData"].VR = "OB"
            image["PixelData"].is_undefined_length = True
        ids.append(store_study(image))
    return ids


def image_fingerprint(database: Database, study_id: int) -> int:
    with database.sessions() as session:
        path = session.scalars(select(Instance.path).where(Instance.study_id == study_id)).one()
    return fingerprint(display_pixels(path))


def table(database: Database, model):
    with database.sessions() as session:
        return list(session.scalars(select(model).order_by(model.id)))


def last_reason(database: Database, study_id: int) -> str | None:
    with database.sessions() as session:
        query = (
            select(StudyEvent.reason).where(StudyEvent.study_id == study_id).order_by(StudyEvent.id.desc())
        )
        return session.scalars(query.limit(1)).first()


def reports_by_study(database: Database) -> dict[int, Report]:
    return {report.study_id: report for report in table(database, Report)}


def jobs_by_study(database: Database) -> dict[int, list[Job]]:
    found: dict[int, list[Job]] = {}
    for job in table(database, Job):
        found.setdefault(job.study_id, []).append(job)
    return found


def test_a_batch_of_four_with_one_unusable_study_stores_three_reports_and_fails_one(
    database: Database, node_settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 4, unusable=2)
    handed: list[int] = []
    batch = BatchInference(make_inference(database, node_settings(pacs=PACS), batching), 4, handed.append)

    result = batch.run(ids[0], "task-lead")

    assert result.outcome == "reported"
    good = [ids[0], ids[1], ids[3]]
    assert batching.batches == [[image_fingerprint(database, study_id) for study_id in good]]
    assert batching.alone == []  # the unreadable image failed at reading, before any decode
    reports = reports_by_study(database)
    assert sorted(reports) == sorted(good)
    for study_id in good:  # each report names its own image and its own patient, never another's
        report = reports[study_id]
        assert report.findings == f"Pattern {image_fingerprint(database, study_id)} is seen."
        assert thawed_header(report.identity).PatientID == f"MRN{ids.index(study_id) + 1:04d}"
        assert thawed_header(report.identity).AccessionNumber == f"ACC{ids.index(study_id) + 1:04d}"
    assert result.report_id == reports[ids[0]].id
    assert handed == [reports[ids[1]].id, reports[ids[3]].id]  # the lead's own is the task's to hand over
    jobs = jobs_by_study(database)
    assert sorted(jobs) == sorted(ids)
    assert {study_id: len(rows) for study_id, rows in jobs.items()} == dict.fromkeys(ids, 1)
    assert {row.celery_task_id for rows in jobs.values() for row in rows} == {"task-lead"}
    assert all(rows[0].heartbeat_at is not None and rows[0].worker_pid for rows in jobs.values())
    [failed] = jobs[ids[2]]
    assert failed.state is JobState.FAILED
    assert failed.error.startswith("the model cannot read the chosen image:")
    assert [jobs[study_id][0].state for study_id in good] == [JobState.SUCCEEDED] * 3
    states = {study.id: study.state for study in table(database, Study)}
    assert states[ids[2]] is StudyState.FAILED
    assert last_reason(database, ids[2]) == f"inference: {failed.error}"
    assert {states[study_id] for study_id in good} == {StudyState.INFERRED}


def test_a_draft_the_gate_fails_is_redecoded_alone_after_the_others_are_stored(
    database: Database, settings: Settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 3)
    held_back = image_fingerprint(database, ids[1])
    batching.broken = {held_back}

    result = BatchInference(make_inference(database, settings, batching), 3).run(ids[0], "task-lead")

    assert result.outcome == "reported"
    assert len(batching.batches) == 1 and len(batching.batches[0]) == 3
    assert batching.alone == [(held_back, "multistep")]  # only the failed draft, alone, multi-step
    reports = reports_by_study(database)
    assert (reports[ids[1]].gate, reports[ids[1]].findings) == ("redecoded", f"Pattern {held_back} is seen.")
    assert reports[ids[1]].decoding.startswith("multistep")
    assert [(reports[i].gate, reports[i].decoding) for i in (ids[0], ids[2])] == [("passed", "onestep")] * 2
    assert reports[ids[1]].id == max(report.id for report in reports.values())  # stored last


def test_the_other_studies_own_tasks_are_no_ops_afterwards(
    database: Database, settings: Settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 3)
    inference = make_inference(database, settings, batching)
    BatchInference(inference, 3).run(ids[0], "task-lead")
    decoded = (list(batching.batches), list(batching.alone))

    again = [BatchInference(inference, 3).run(study_id, f"task-{study_id}") for study_id in ids[1:]]
    alone = inference.run(ids[1], "task-again")

    for study_id, result in zip(ids[1:], again, strict=True):
        assert (result.outcome, result.detail) == ("skipped", f"study {study_id} is inferred, not queued")
    assert (alone.outcome, alone.detail) == ("skipped", f"study {ids[1]} is inferred, not queued")
    assert (batching.batches, batching.alone) == decoded
    assert len(table(database, Report)) == 3 and len(table(database, Job)) == 3


def test_a_worker_killed_mid_batch_leaves_each_study_to_the_reconciler_then_drafts_them_alone(
    database: Database, settings: Settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 3)
    dead = make_inference(database, settings, batching, worker=lambda: WorkerProcess("host-a", GONE_PID))
    batch = BatchInference(dead, 3)
    lead_job = dead.claim(ids[0], "task-lead")  # the claims, then the process is killed
    assert isinstance(lead_job, int)
    assert [study for study, _ in batch._companions(ids[0], lead_job, "task-lead")] == ids[1:]

    policy = ReconcilePolicy(
        Liveness(timedelta(seconds=60), timedelta(seconds=360), "host-a", lambda pid: pid != GONE_PID),
        requeue_after=timedelta(seconds=600),
        max_dead_attempts=settings.max_dead_attempts,
    )
    with database.sessions.begin() as session:
        done = reconcile(session, table(database, Job)[0].started_at + timedelta(seconds=1), policy)
    assert (sorted(done.republished), done.failed) == (ids, [])
    assert {job.state for job in table(database, Job)} == {JobState.DEAD}
    with database.sessions.begin() as session:  # the assembly sweep publishes them again
        session.execute(update(Study).values(enqueued_at=datetime.now(UTC)))

    newcomer = store_study(images.chest(patient_id="MRN0099"))  # fresh: it would lead a batch
    live = make_inference(database, settings, batching)
    results = [
        BatchInference(live, 3).run(study_id, f"task-{study_id}") for study_id in [ids[0], newcomer, *ids[1:]]
    ]

    assert [result.outcome for result in results] == ["reported"] * 4
    assert batching.batches == []  # a study whose attempt died is drafted alone, never in a batch again
    assert len(batching.alone) == 4
    assert {study_id: [job.state for job in rows] for study_id, rows in jobs_by_study(database).items()} == (
        {**dict.fromkeys(ids, [JobState.DEAD, JobState.SUCCEEDED]), newcomer: [JobState.SUCCEEDED]}
    )


def test_a_failed_batch_pass_decodes_each_study_alone(
    database: Database, settings: Settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 3)
    batching.batch_error = RuntimeError("CUDA out of memory for this batch size")

    result = BatchInference(make_inference(database, settings, batching), 3).run(ids[0], "task-lead")

    assert result.outcome == "reported"
    assert [decode for _, decode in batching.alone] == ["onestep"] * 3
    assert sorted(reports_by_study(database)) == ids


def test_the_lead_s_transient_error_is_raised_after_its_companions_are_stored(
    database: Database, settings: Settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 3)
    loads = []

    def load() -> BatchingEngine:
        loads.append(1)
        if len(loads) == 1:  # the lead is prepared first
            raise EngineUnavailable("GPU not ready")
        return batching

    with pytest.raises(EngineUnavailable, match="GPU not ready"):
        BatchInference(make_inference(database, settings, batching, load=load), 3).run(ids[0], "task-lead")

    assert sorted(reports_by_study(database)) == ids[1:]
    jobs = jobs_by_study(database)
    assert (jobs[ids[0]][0].state, jobs[ids[0]][0].error) == (
        JobState.FAILED,
        "will retry: EngineUnavailable: GPU not ready",
    )
    assert table(database, Study)[0].state is StudyState.QUEUED  # its task retries it, alone


def test_a_time_limit_mid_batch_settles_every_study_and_publishes_the_companions_again(
    database: Database, settings: Settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 3)
    batching.batch_error = SoftTimeLimitExceeded()

    with pytest.raises(SoftTimeLimitExceeded):
        BatchInference(make_inference(database, settings, batching), 3).run(ids[0], "task-lead")

    assert table(database, Report) == []
    assert [job.state for job in table(database, Job)] == [JobState.FAILED] * 3
    studies_now = {study.id: study for study in table(database, Study)}
    assert {study.state for study in studies_now.values()} == {StudyState.QUEUED}
    assert studies_now[ids[0]].enqueued_at is not None  # its own message is retried by Celery
    assert [studies_now[i].enqueued_at for i in ids[1:]] == [None, None]  # the sweep publishes them


def test_one_lost_attempt_failing_a_study_means_no_batch(
    database: Database, node_settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 2)
    inference = make_inference(database, node_settings(max_dead_attempts=1), batching)

    assert BatchInference(inference, 4).run(ids[0], "task-lead").outcome == "reported"

    assert batching.batches == [] and len(batching.alone) == 1
    assert sorted(reports_by_study(database)) == ids[:1]


def test_the_task_drafts_a_batch_and_the_companions_messages_find_it_done(
    settings: Settings, database: Database, store_study, images, batching, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Celery (eager): ECHO_GPU_BATCH=4 loads the engine for batches of at least 8 studies."""
    loads: list[dict[str, object]] = []

    def load(model_dir: Path, *args: object, **kwargs: object) -> BatchingEngine:
        loads.append(kwargs)
        batching.providers, batching.start_seconds = ["CPUExecutionProvider"], 0.0  # type: ignore[attr-defined]
        return batching

    monkeypatch.setattr("echo.runtime.Engine.load", load)
    app = create_worker_app(settings.model_copy(update={"gpu_batch": 4}))
    app.loader.import_default_modules()
    task = app.tasks[INFER_STUDY]
    ids = studies(store_study, images, 3)
    try:
        assert task.apply(args=[ids[0]]).get() == "reported: report 1"
        done = [task.apply(args=[study_id]).get() for study_id in ids[1:]]
    finally:
        task.database.dispose()
    assert done == [f"skipped: study {study_id} is inferred, not queued" for study_id in ids[1:]]
    assert [len(batch) for batch in batching.batches] == [3] and batching.alone == []
    assert [kwargs["max_batch"] for kwargs in loads] == [8]


def test_echo_gpu_batch_defaults_to_one_and_names_itself_when_out_of_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(data_dir=tmp_path).gpu_batch == 1
    monkeypatch.setenv("ECHO_GPU_BATCH", "16")
    assert load_settings(data_dir=tmp_path).gpu_batch == 16
    monkeypatch.setenv("ECHO_GPU_BATCH", "0")
    with pytest.raises(SettingsError, match="^bad setting ECHO_GPU_BATCH: "):
        load_settings(data_dir=tmp_path)


def test_a_second_batch_takes_only_studies_no_other_attempt_holds(
    database: Database, settings: Settings, store_study, images, batching: BatchingEngine
) -> None:
    ids = studies(store_study, images, 5)
    other = make_inference(database, settings, batching, worker=lambda: WorkerProcess("host-b", 4242))
    held = other.claim(ids[0], "task-b")  # another GPU host's batch holds ids[0] and ids[1]
    assert isinstance(held, int)
    assert BatchInference(other, 2)._companions(ids[0], held, "task-b") == [(ids[1], held + 1)]

    result = BatchInference(make_inference(database, settings, batching), 4).run(ids[2], "task-a")

    assert result.outcome == "reported"
    assert sorted(reports_by_study(database)) == ids[2:]
    assert {job.study_id: job.state for job in table(database, Job) if job.celery_task_id == "task-b"} == {
        ids[0]: JobState.RUNNING,
        ids[1]: JobState.RUNNING,
    }
