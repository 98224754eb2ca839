"""`echo-admin status` and `echo-admin studies`: what the operator sees, and what they never see."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from node.config.settings import load_settings
from node.dicom.assembly import StudyAssembler
from node.dicom.association_log import AssociationLog, Peer
from node.dicom.ingest import Ingestor
from node.dicom.outcome import ReceivedInstance
from node.dicom.spool import Spool
from node.ops.admin import main
from node.store.database import migrate, open_database
from node.store.models import Delivery, Job, ModelVersion, Report, Study, utcnow
from node.store.states import AssociationOutcome, DeliveryKind, DeliveryStatus, JobKind, JobState, StudyState
from node.store.transitions import transition
from node.store.uids import short_uid


def run_admin(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")  # rich: one table row per line
    monkeypatch.setattr("sys.argv", ["echo-admin", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


@pytest.fixture
def populated(tmp_path: Path, dicom: SimpleNamespace) -> SimpleNamespace:
    """A node database with a queued chest study (2 instances) and a skipped knee study."""
    data_dir = tmp_path / "data"
    database = open_database(load_settings(data_dir=data_dir))
    migrate(database.engine)
    ingestor = Ingestor(database.sessions, Spool(data_dir / "spool"))
    associations = AssociationLog(database.sessions)
    live = associations.opened(Peer("MODALITY1", "ECHO", "10.1.2.3", 104))
    chest = dicom.chest_image(accession="ACC-CHEST")
    images = [
        chest,
        dicom.chest_image(study_uid=chest.StudyInstanceUID, accession="ACC-CHEST"),
        dicom.chest_image(body_part="KNEE", accession="ACC-KNEE"),
    ]
    ids = [
        ingestor.store(
            ReceivedInstance(
                image.SOPClassUID, image.SOPInstanceUID, ExplicitVRLittleEndian, dicom.part10(image), live.id
            )
        ).study_id
        for image in images
    ]
    live.count(True)
    associations.ended(live, AssociationOutcome.RELEASED)
    with database.sessions.begin() as session:
        for study_id, target in ((ids[0], StudyState.QUEUED), (ids[2], StudyState.SKIPPED)):
            study = session.get_one(Study, study_id)
            transition(session, study, StudyState.COMPLETE, "quiet")
            transition(
                session,
                study,
                target,
                "body part KNEE is not CHEST" if target is StudyState.SKIPPED else "chest",
            )
    database.dispose()
    return SimpleNamespace(data_dir=data_dir, chest_uid=chest.StudyInstanceUID)


def test_status_counts_states_and_shows_queues_and_the_last_association(
    populated: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_admin(["status"], capsys, monkeypatch, ECHO_DATA_DIR=str(populated.data_dir))
    assert (code, err) == (0, "")
    counts = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in out.splitlines()
        if line.count("│") == 3
    }
    assert counts == {
        "received": "0",
        "complete": "0",
        "queued": "1",
        "inferred": "0",
        "delivered": "0",
        "skipped": "1",
        "failed": "0",
    }
    assert "queues: gpu 0 waiting, io 0 waiting, train 0 waiting" in out
    assert "last association: MODALITY1 from 10.1.2.3, released" in out and "1 stored, 0 failed" in out
    assert "open associations: 0" in out


def test_status_says_how_many_re_decoded_drafts_the_teacher_wrote(
    populated: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    database = open_database(load_settings(data_dir=populated.data_dir))
    with database.sessions.begin() as session:
        study_id = session.scalars(select(Study.id)).first()
        model = ModelVersion(
            name="student", version="0123456789abcdef", path="/m", sha256="0" * 64, block_size=8
        )
        session.add(model)
        session.flush()
        for revision, (decoding, gate) in enumerate(
            (
                ("onestep", "passed"),
                ("multistep steps=8 tau=0.85 by teacher fedcba9876543210", "redecoded"),
                ("multistep steps=8 tau=1.00", "redecoded"),  # the student's own re-decode
            ),
            1,
        ):
            session.add(
                Report(
                    study_id=study_id,
                    model_version_id=model.id,
                    findings="f",
                    impression="i",
                    text="FINDINGS: f\nIMPRESSION: i",
                    tokens=3,
                    forwards=1,
                    seconds=0.1,
                    decoding=decoding,
                    gate=gate,
                    revision=revision,  # one study's drafts, one after the other
                )
            )
    database.dispose()
    code, out, err = run_admin(["status"], capsys, monkeypatch, ECHO_DATA_DIR=str(populated.data_dir))
    assert (code, err) == (0, "")
    assert "draft gate: 1 passed, 2 re-decoded (1 by the teacher), 0 held (not sent)" in out


def test_status_counts_retraining_runs_waiting_for_a_gpu_worker(
    populated: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`echo-admin retrain --queue` sends to the train queue: an operator sees a run nobody took."""
    from node.broker.app import RETRAIN_MODEL, create_app

    app = create_app(load_settings(data_dir=populated.data_dir))
    app.send_task(RETRAIN_MODEL, args=["v1", "/nowhere/manifest.jsonl"])
    code, out, err = run_admin(["status"], capsys, monkeypatch, ECHO_DATA_DIR=str(populated.data_dir))
    assert (code, err) == (0, "")
    assert "queues: gpu 0 waiting, io 0 waiting, train 1 waiting" in out


def test_status_still_prints_when_the_broker_is_down(
    populated: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_admin(
        ["status"],
        capsys,
        monkeypatch,
        ECHO_DATA_DIR=str(populated.data_dir),
        ECHO_BROKER_URL="redis://127.0.0.1:1/0",
    )
    assert code == 0
    assert "queues: broker unreachable (OperationalError)" in out


def test_studies_shows_accession_state_and_hashed_uids_only(
    populated: SimpleNamespace,
    dicom: SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, _ = run_admin(["studies"], capsys, monkeypatch, ECHO_DATA_DIR=str(populated.data_dir))
    assert code == 0
    assert "ACC-CHEST" in out and "ACC-KNEE" in out
    assert short_uid(populated.chest_uid) in out
    for secret in (populated.chest_uid, dicom.PATIENT_ID, dicom.PATIENT_NAME):
        assert secret not in out
    code, out, _ = run_admin(
        ["studies", "--state", "SKIPPED", "--limit", "5"],
        capsys,
        monkeypatch,
        ECHO_DATA_DIR=str(populated.data_dir),
    )
    assert code == 0
    assert "ACC-KNEE" in out and "ACC-CHEST" not in out and "body part KNEE is not CHEST" in out
    _, out, _ = run_admin(
        ["studies", "--limit", "1"], capsys, monkeypatch, ECHO_DATA_DIR=str(populated.data_dir)
    )
    assert "(1 shown)" in out


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["studies", "--state", "lost"], {}, "--state 'lost' is not one of received, complete, queued"),
        (["status"], {"ECHO_PORT": "0"}, "bad setting ECHO_PORT: Input should be greater than or equal to 1"),
        (
            ["status"],
            {"ECHO_DATA_DIR": "/nonexistent/echo"},
            "no database at /nonexistent/echo/echo.db: start",
        ),
        (
            ["studies"],
            {"ECHO_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/no_such_echo_db"},
            "ECHO_DATABASE_URL: cannot connect to the database at "
            "postgresql+psycopg://postgres@127.0.0.1:5432/no_such_echo_db",
        ),
        (
            ["studies"],
            {"ECHO_DATABASE_URL": "nonsense"},
            "bad setting ECHO_DATABASE_URL: not a SQLAlchemy URL",
        ),
        (
            ["status"],
            {"ECHO_DATABASE_URL": "mysql://echo@db/echo"},
            "bad setting ECHO_DATABASE_URL: the driver for 'mysql' is not installed",
        ),
    ],
)
def test_user_errors_are_one_line(
    args: list[str],
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run_admin(args, capsys, monkeypatch, **{"ECHO_DATA_DIR": str(tmp_path), **env})
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith(f"echo-admin: error: {message}")


# --- issue 15 #8: operators can recover -------------------------------------------------------------


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[int] = []

    def publish_inference(self, study_id: int) -> None:
        self.published.append(study_id)


@pytest.fixture
def failures(tmp_path: Path, dicom: SimpleNamespace) -> SimpleNamespace:
    """A node database with: a study that failed at inference (one failed attempt); a study that
    failed delivering its draft (a report and a refused ORU); a skipped study; a queued one."""
    data_dir = tmp_path / "data"
    database = open_database(load_settings(data_dir=data_dir))
    migrate(database.engine)
    ingestor = Ingestor(database.sessions, Spool(data_dir / "spool"))
    associations = AssociationLog(database.sessions)
    live = associations.opened(Peer("MODALITY1", "ECHO", "10.1.2.3", 104))
    images = {
        "unreadable": dicom.chest_image(accession="ACC-BROKEN"),
        "refused": dicom.chest_image(accession="ACC-REFUSED"),
        "knee": dicom.chest_image(body_part="KNEE", accession="ACC-KNEE"),
        "waiting": dicom.chest_image(accession="ACC-WAIT"),
    }
    ids = {
        name: ingestor.store(
            ReceivedInstance(
                image.SOPClassUID, image.SOPInstanceUID, ExplicitVRLittleEndian, dicom.part10(image), live.id
            )
        ).study_id
        for name, image in images.items()
    }
    associations.ended(live, AssociationOutcome.RELEASED)
    now = utcnow()
    with database.sessions.begin() as session:
        for name in ("unreadable", "refused", "waiting"):
            study = session.get_one(Study, ids[name])
            transition(session, study, StudyState.COMPLETE, "quiet")
            transition(session, study, StudyState.QUEUED, "chest")
            study.enqueued_at = now
        knee = session.get_one(Study, ids["knee"])
        transition(session, knee, StudyState.COMPLETE, "quiet")
        transition(session, knee, StudyState.SKIPPED, "body part KNEE is not CHEST")
        broken = session.get_one(Study, ids["unreadable"])
        session.add(
            Job(
                study_id=broken.id,
                kind=JobKind.INFER,
                attempt=1,
                state=JobState.FAILED,
                error="ValueError: the pixel data cannot be decoded",
                started_at=now,
                ended_at=now,
                worker_host="gpu1",
                worker_pid=4242,
            )
        )
        transition(
            session,
            broken,
            StudyState.FAILED,
            "the image could not be read: the pixel data cannot be decoded",
        )
        refused = session.get_one(Study, ids["refused"])
        model = ModelVersion(
            name="student", version="0123456789abcdef", path="/m", sha256="0" * 64, block_size=8
        )
        session.add(model)
        session.flush()
        report = Report(
            study_id=refused.id,
            model_version_id=model.id,
            findings="No acute findings.",
            impression="Normal chest.",
            text="FINDINGS: No acute findings.\nIMPRESSION: Normal chest.",
            tokens=12,
            forwards=2,
            seconds=0.4,
        )
        session.add(report)
        session.flush()
        session.add(
            Delivery(
                report_id=report.id,
                kind=DeliveryKind.ORU,
                target="ris.local:2575",
                message_id="C123",
                status=DeliveryStatus.FAILED,
                attempts=1,
                last_error="the RIS refused the message (AR)",
                ack_code="AR",
                ack_text="unknown order",
            )
        )
        transition(session, refused, StudyState.INFERRED, "report 1")
        transition(session, refused, StudyState.FAILED, "ORU refused by ris.local:2575: unknown order")
    database.dispose()
    return SimpleNamespace(data_dir=data_dir, ids=ids, images=images)


def _study(data_dir: Path, study_id: int) -> tuple[StudyState, object, list[str | None]]:
    database = open_database(load_settings(data_dir=data_dir))
    try:
        with database.sessions() as session:
            study = session.get_one(Study, study_id)
            reasons = [event.reason for event in study.events]
            return study.state, study.enqueued_at, reasons
    finally:
        database.dispose()


def test_studies_shows_why_a_study_failed(
    failures: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_admin(
        ["studies", "--state", "failed"], capsys, monkeypatch, ECHO_DATA_DIR=str(failures.data_dir)
    )
    assert code == 0
    lines = {line.split("│")[3].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert set(lines) == {"ACC-BROKEN", "ACC-REFUSED"}
    assert "the image could not be read: the pixel data cannot be decoded" in lines["ACC-BROKEN"]
    assert "ORU refused by ris.local:2575: unknown order" in lines["ACC-REFUSED"]


def test_requeue_sends_a_failed_study_back_to_the_queue_for_the_node_to_publish(
    failures: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = failures.ids["unreadable"]
    code, out, err = run_admin(
        ["requeue", "ACC-BROKEN"], capsys, monkeypatch, ECHO_DATA_DIR=str(failures.data_dir)
    )
    assert (code, err) == (0, "")
    assert f"re-queued 1 study ({broken})" in out
    state, enqueued_at, reasons = _study(failures.data_dir, broken)
    assert (state, enqueued_at) == (StudyState.QUEUED, None)
    assert reasons[-1] == "re-queued by an operator (echo-admin requeue)"
    # the node's assembly loop is what hands it to the broker
    database = open_database(load_settings(data_dir=failures.data_dir))
    publisher = RecordingPublisher()
    try:
        assert StudyAssembler(database.sessions, 0.0, publisher).publish_pending() == [broken]
    finally:
        database.dispose()
    assert publisher.published == [broken]


def test_requeue_of_every_failed_study_leaves_the_ones_with_a_draft_for_resend(
    failures: SimpleNamespace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_admin(
        ["requeue", "--state", "FAILED"], capsys, monkeypatch, ECHO_DATA_DIR=str(failures.data_dir)
    )
    refused = failures.ids["refused"]
    assert code == 0
    assert f"re-queued 1 study ({failures.ids['unreadable']})" in out
    assert f"left as is: study {refused} already has a draft (it failed while delivering it): use" in out
    assert _study(failures.data_dir, refused)[0] is StudyState.FAILED
    assert _study(failures.data_dir, failures.ids["unreadable"])[0] is StudyState.QUEUED
    code, out, _ = run_admin(
        ["requeue", "--state", "failed"], capsys, monkeypatch, ECHO_DATA_DIR=str(failures.data_dir)
    )
    assert code == 0 and "no failed study to re-queue" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["requeue", "ACC-REFUSED"],
            "study {refused} already has a draft (it failed while delivering it): use `echo-admin resend {refused}` to send it again",
        ),
        (
            ["requeue", "ACC-KNEE"],
            "study {knee} was skipped (body part KNEE is not CHEST): the node does not draft it",
        ),
        (["requeue", "ACC-WAIT"], "study {waiting} is already queued"),
        (["requeue", "ACC-NONE"], "no study with id, Study Instance UID or accession number 'ACC-NONE'"),
        (
            ["requeue", "--state", "queued"],
            "--state 'queued': only failed studies can be re-queued (failed -> queued); use --state failed",
        ),
        (["requeue"], "give either a study (id, Study Instance UID or accession number) or --state failed"),
        (["requeue", "1", "--state", "failed"], "give either a study"),
        (["study", "ACC-NONE"], "no study with id, Study Instance UID or accession number 'ACC-NONE'"),
    ],
)
def test_requeue_and_study_refuse_in_one_line(
    args: list[str],
    message: str,
    failures: SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = run_admin(args, capsys, monkeypatch, ECHO_DATA_DIR=str(failures.data_dir))
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith(f"echo-admin: error: {message.format(**failures.ids)}")


def test_study_shows_instances_jobs_reports_deliveries_and_the_timeline_without_identifiers(
    failures: SimpleNamespace,
    dicom: SimpleNamespace,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, _ = run_admin(
        ["study", "ACC-BROKEN"], capsys, monkeypatch, ECHO_DATA_DIR=str(failures.data_dir)
    )
    broken = failures.images["unreadable"]
    assert code == 0
    assert (
        f"study {failures.ids['unreadable']}: {short_uid(broken.StudyInstanceUID)}, accession ACC-BROKEN"
        in out
    )
    assert "state: failed (the image could not be read: the pixel data cannot be decoded)" in out
    assert "instances: 1 (views: " in out and "Computed Radiography Image Storage" in out
    assert re.search(
        r"│ infer\s+│ 1\s+│ failed\s+│ gpu1:4242 .*ValueError: the pixel data cannot be decoded", out
    )
    assert "reports: none" in out and "deliveries: none" in out
    timeline = [
        line
        for line in out.splitlines()
        if "│" in line and re.search(r"│ (received|complete|queued|failed)\s", line)
    ]
    assert [line.split("│")[3].strip() for line in timeline[-3:]] == ["complete", "queued", "failed"]
    code, out, _ = run_admin(
        ["study", str(failures.ids["refused"])], capsys, monkeypatch, ECHO_DATA_DIR=str(failures.data_dir)
    )
    assert code == 0
    assert re.search(r"│ student\s+│ 0123456789abcdef", out)
    assert re.search(
        r"│ ORU\s+│ ris\.local:2575\s+│ failed\s+│ 1\s+│.*the RIS refused the message \(AR\)\s+│ AR unknown order",
        out,
    )
    for secret in (
        broken.StudyInstanceUID,
        broken.SeriesInstanceUID,
        broken.SOPInstanceUID,
        dicom.PATIENT_ID,
        dicom.PATIENT_NAME,
        "No acute findings",
    ):
        assert secret not in out


def test_a_study_row_s_note_names_the_conflict_once() -> None:
    from datetime import UTC, datetime

    from node.ops.overview import StudyRow

    now = datetime.now(UTC)
    row = StudyRow(
        1, "1.2", None, "CR", StudyState.FAILED, None, 2, now, now, now,
        failure_reason="held", identity_conflict="instances disagree on PatientID",
    )  # fmt: skip
    assert row.note == "held; instances disagree on PatientID"
