"""The production shape on real connections: DCMTK storescu -> node (PostgreSQL, Redis) -> a Celery
worker process -> the SR at a PACS (checked by dciodvfy) and the ORU at a RIS (parsed by python-hl7).
Then the faults of a worker: killed mid-task, and the same task delivered twice."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from echo.data.synthetic import generate_study, study_case
from node.broker.app import DELIVER_REPORT, INFER_STUDY
from node.config.settings import load_settings
from node.delivery.messages import model_identity, with_demo_notice
from node.store.database import Database, open_database
from node.store.models import Delivery, Instance, Job, ModelVersion, Report, Study
from node.store.states import DeliveryStatus, JobState, StudyState
from worker.app import create_worker_app

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

HOLD_WORKER = Path(__file__).resolve().parent / "hold_worker.py"


@dataclass
class Site:
    port: int
    data_dir: Path
    database: Database
    hold_dir: Path
    broker_url: str
    logs: object  # () -> str

    def study(self, study_uid: str) -> Study | None:
        with self.database.sessions() as session:
            return session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).first()


@pytest.fixture(scope="module")
def site(
    tmp_path_factory,
    launch,
    _module_pacs,
    _module_ris,
    postgres_url,
    redis_url,
    model_dir,
    environment,
    free_ports,
    dcmtk,
    wait,
):
    """The node and one worker process, started once for the module's tests."""
    port = free_ports()
    data_dir = tmp_path_factory.mktemp("node")
    hold_dir = tmp_path_factory.mktemp("hold")
    env = environment(
        data_dir,
        port,
        model_dir,
        pacs=_module_pacs.address,
        ris=_module_ris.address,
        database_url=postgres_url,
        broker_url=redis_url,
    )
    env["ECHO_DRAFT_GATE"] = "false"  # plumbing: the synthetic studies' drafts are not what is tested
    launch("node", ["-m", "node.serve.cli", "serve"], env)
    launch(
        "worker",
        [str(HOLD_WORKER), "--queues", "gpu,io", "--concurrency", "1", "--name", f"e2e-{port}@%h"],
        {**env, "ECHO_TEST_HOLD_DIR": str(hold_dir)},
    )
    echo = ("echoscu", "-aet", "STORESCU", "-aec", "ECHO", "127.0.0.1", str(port))
    wait(lambda: dcmtk(*echo).returncode == 0, 60, "the node's SCP", launch.logs)
    database = open_database(load_settings(data_dir=data_dir, database_url=postgres_url))
    yield Site(port, data_dir, database, hold_dir, redis_url, launch.logs)
    database.dispose()


def synthetic_study(folder: Path, *, lateral: bool, nth: int = 0) -> list[Path]:
    """The `nth` synthetic study with (or without) a lateral view: its files, frontal first."""
    index = [i for i in range(200) if study_case(3, i).acquisition.lateral is lateral][nth]
    row = generate_study(3, index, folder, size=128)
    return [folder / image for image in row.images]


def send(dcmtk, site: Site, files: list[Path]) -> None:
    sent = dcmtk(
        "storescu", "-aet", "STORESCU", "-aec", "ECHO", "127.0.0.1", str(site.port), *map(str, files)
    )
    assert sent.returncode == 0, sent.stderr + site.logs()


def test_a_study_becomes_an_sr_at_the_pacs_and_an_oru_at_the_ris(
    site: Site, pacs, ris, dcmtk, wait, tmp_path: Path
) -> None:
    files = synthetic_study(tmp_path / "study", lateral=True)
    frontal, lateral = (dcmread(path) for path in files)
    send(dcmtk, site, list(reversed(files)))  # the lateral first: the node must still read the frontal

    def delivered() -> bool:
        study = site.study(frontal.StudyInstanceUID)
        assert study is None or study.state is not StudyState.FAILED, site.logs()
        return study is not None and study.state is StudyState.DELIVERED

    wait(delivered, 90, "the study to be delivered", site.logs)
    with site.database.sessions() as session:
        report, source, report_model = session.execute(
            select(Report, Instance.sop_instance_uid, ModelVersion)
            .join(Instance, Report.instance_id == Instance.id)
            .join(ModelVersion, Report.model_version_id == ModelVersion.id)
        ).one()
        statuses = {
            row.kind.value: (row.status, row.attempts, row.ack_code)
            for row in session.scalars(select(Delivery))
        }
    assert source == frontal.SOPInstanceUID != lateral.SOPInstanceUID
    assert statuses == {
        "sr": (DeliveryStatus.DELIVERED, 1, "0000"),
        "air": (DeliveryStatus.DELIVERED, 1, "0000"),  # the AI Results SR, in the same association
        "oru": (DeliveryStatus.DELIVERED, 1, "AA"),
    }

    # The SR: one, at the PACS, valid, with the patient and study of the source.
    [sr] = pacs.received
    assert (sr.StudyInstanceUID, sr.PatientID, sr.AccessionNumber) == (
        frontal.StudyInstanceUID,
        frontal.PatientID,
        frontal.AccessionNumber,
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    checked = dcmtk("dciodvfy", str(path))
    lines = (checked.stdout + checked.stderr).splitlines()
    assert [line for line in lines if line.startswith("Error")] == [], "\n".join(lines)
    dumped = dcmtk("dsrdump", str(path))
    assert dumped.returncode == 0 and "Comprehensive SR Document" in dumped.stdout

    # The ORU: one, parsed by python-hl7, with the stored report's accession, patient and text.
    [oru] = ris.received
    assert str(oru.segment("OBR")[18]) == frontal.AccessionNumber
    assert str(oru.segment("PID")[3][0][0]) == frontal.PatientID
    texts = [oru.unescape(str(obx[5])) for obx in oru.segments("OBX") if str(obx[2]) == "TX"]
    impression = with_demo_notice(report.impression, model_identity(report_model))  # as sent
    stored = [line for line in (report.findings + "\n" + impression).splitlines() if line]
    # Long lines travel as several OBX (wrapped at word boundaries): the words must be the same.
    texts, stored = " ".join(" ".join(texts).split()), " ".join(" ".join(stored).split())
    assert texts == stored


def test_a_worker_killed_mid_task_still_reports_the_study_once(
    site: Site, pacs, ris, dcmtk, wait, tmp_path
) -> None:
    (site.hold_dir / "hold").touch()  # the next inference stops after its claim
    [frontal] = synthetic_study(tmp_path / "study", lateral=False, nth=0)
    study_uid = dcmread(frontal, stop_before_pixels=True).StudyInstanceUID
    send(dcmtk, site, [frontal])
    held = site.hold_dir / "held.pid"
    wait(held.is_file, 60, "inference to start", site.logs)
    os.kill(int(held.read_text()), signal.SIGKILL)

    wait(
        lambda: (s := site.study(study_uid)) is not None and s.state is StudyState.DELIVERED,
        90,
        "delivery",
        site.logs,
    )
    study_id = site.study(study_uid).id
    with site.database.sessions() as session:
        jobs = [
            (job.attempt, job.state, job.error)
            for job in session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.attempt))
        ]
        reports = session.scalars(select(Report).where(Report.study_id == study_id)).all()
    assert jobs == [
        (1, JobState.DEAD, "its worker was lost; the message was redelivered"),
        (2, JobState.SUCCEEDED, None),
    ]
    assert len(reports) == 1 and len(pacs.received) == 1 and len(ris.received) == 1


def test_the_same_task_twice_reports_and_delivers_once(site: Site, pacs, ris, dcmtk, wait, tmp_path) -> None:
    [frontal] = synthetic_study(tmp_path / "study", lateral=False, nth=1)
    study_uid = dcmread(frontal, stop_before_pixels=True).StudyInstanceUID
    send(dcmtk, site, [frontal])
    wait(
        lambda: (s := site.study(study_uid)) is not None and s.state is StudyState.DELIVERED,
        90,
        "delivery",
        site.logs,
    )
    study_id = site.study(study_uid).id
    with site.database.sessions() as session:
        report_id = session.scalars(select(Report.id).where(Report.study_id == study_id)).one()

    app = create_worker_app(load_settings(data_dir=site.data_dir, broker_url=site.broker_url))
    # A duplicate inference message (as after a node crash) and a duplicate delivery request.
    infer_again = app.send_task(INFER_STUDY, args=[study_id]).id
    deliver_again = app.send_task(DELIVER_REPORT, args=[report_id]).id

    def both_handled() -> bool:
        log = site.logs()
        return (
            f"echo.infer_study[{infer_again}] succeeded" in log
            and f"echo.deliver_report[{deliver_again}] succeeded" in log
        )

    wait(both_handled, 30, "the duplicates to be handled", site.logs)
    log = site.logs()
    assert f"echo.infer_study[{infer_again}] succeeded in" in log
    assert (
        f"'skipped: study {study_id} is delivered, not queued'"
        in log.split(f"echo.infer_study[{infer_again}]")[-1]
    )
    assert (
        "'0 delivered, 0 retrying, 0 failed'"
        in log.split(f"echo.deliver_report[{deliver_again}] succeeded")[-1].splitlines()[0]
    )
    with site.database.sessions() as session:
        assert len(session.scalars(select(Report).where(Report.study_id == study_id)).all()) == 1
        assert len(session.scalars(select(Job).where(Job.study_id == study_id)).all()) == 1
        assert len(session.scalars(select(Delivery).where(Delivery.report_id == report_id)).all()) == 3
    assert len(pacs.received) == len(pacs.air) == len(ris.received) == 1
