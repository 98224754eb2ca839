"""The demo study's draft as a PACS and a FHIR server take it: the SR pair passes dciodvfy, the
DiagnosticReport is built by validated models, and a real Orthanc, sent the image and then the outbox's
two SRs, shows both in the study beside the image."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage

from exporters.dicom_sender import send_datasets
from node.config.settings import DicomPeer
from node.delivery.messages import model_identity, report_air_sr, report_fhir, report_sr
from node.ops.demo import DEMO_STUDY
from node.store.database import Database
from node.store.models import ModelVersion, Report
from node.store.states import DeliveryKind, DeliveryStatus
from tests.worker.test_outbox import RecordingRis, deliveries, outbox

pytestmark = pytest.mark.integration

ORTHANC = Path("/usr/sbin/Orthanc")


@dataclass
class Orthanc:
    dicom_port: int
    http_port: int

    @property
    def peer(self) -> DicomPeer:
        return DicomPeer("ORTHANC", "127.0.0.1", self.dicom_port)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as answer:
            return json.load(answer)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc from the Debian package (scripts/setup-dev.sh installs it), its own storage and index."""
    assert ORTHANC.exists(), "Orthanc is not installed: run scripts/setup-dev.sh (apt-get install orthanc)"
    server = Orthanc(_free_port(), _free_port())
    config = {
        "Name": "echo-test",
        "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": server.dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "HttpPort": server.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    log = (tmp_path / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [str(ORTHANC), str(tmp_path / "orthanc.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},  # DCMTK-based: no Nagle stalls
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.get("/system")
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "orthanc.log").read_text()
                assert time.monotonic() < deadline, "Orthanc did not answer within 30 s"
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _demo_report(database: Database, report_id: int):
    with database.sessions() as session:
        report = session.get_one(Report, report_id)
        return report, model_identity(session.get_one(ModelVersion, report.model_version_id), report.decoding)


def test_the_demo_study_s_sr_pair_and_diagnostic_report_pass_their_validators(
    database: Database, node_settings, store_study, report_for, engine, tmp_path: Path
) -> None:
    engine.findings = "The heart is enlarged. Small right pleural effusion. No pneumothorax."
    engine.impression = "Cardiomegaly and a small right effusion."
    demo = dcmread(DEMO_STUDY)
    report, model = _demo_report(database, report_for(store_study(demo), node_settings()))

    narrative = report_sr(demo, report.findings, report.impression, model, "2.25.1001")
    air = report_air_sr(demo, report.findings, report.impression, model, "2.25.1002")
    for name, sr in (("narrative", narrative), ("air", air)):
        path = tmp_path / f"{name}.dcm"
        sr.save_as(path, enforce_file_format=True)
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        problems = [
            line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")
        ]
        assert problems == [], f"{name} SR: {problems}"
    bundle = report_fhir(demo, report.findings, report.impression, model, report.created_at)
    again = Bundle.model_validate_json(bundle.model_dump_json())  # fhir.resources validates on parse
    [diagnostic] = [e.resource for e in again.entry if e.resource.get_resource_type() == "DiagnosticReport"]
    assert diagnostic.status == "preliminary" and "right effusion" in diagnostic.conclusion
    assert len(diagnostic.contained) == 3


def test_orthanc_shows_both_srs_in_the_study_beside_the_image(
    database: Database, node_settings, store_study, report_for, clock, orthanc: Orthanc
) -> None:
    demo = dcmread(DEMO_STUDY)
    [stored] = send_datasets([demo], orthanc.peer, calling_ae="MODALITY", timeout=10)
    assert stored.delivered, stored.error
    settings = node_settings(pacs=str(orthanc.peer), ris="127.0.0.1:2575", sr_templates="2000,1500")
    report_id = report_for(store_study(demo), settings)

    outbox(database, settings, clock, store=send_datasets, ris=RecordingRis()).run_due()

    rows = deliveries(database)
    for kind in (DeliveryKind.SR, DeliveryKind.AIR):
        assert rows[(report_id, kind)].status is DeliveryStatus.DELIVERED, rows[(report_id, kind)].last_error
    [study] = orthanc.get("/studies")
    shown = orthanc.get(f"/studies/{study}")
    assert shown["MainDicomTags"]["StudyInstanceUID"] == demo.StudyInstanceUID
    classes = {}
    for series in shown["Series"]:
        for instance in orthanc.get(f"/series/{series}")["Instances"]:
            tags = orthanc.get(f"/instances/{instance}/simplified-tags")
            classes[tags["SOPInstanceUID"]] = (tags["SOPClassUID"], tags["Modality"])
    assert classes == {
        demo.SOPInstanceUID: (demo.SOPClassUID, demo.Modality),
        rows[(report_id, DeliveryKind.SR)].message_id: (ComprehensiveSRStorage, "SR"),
        rows[(report_id, DeliveryKind.AIR)].message_id: (Comprehensive3DSRStorage, "SR"),
    }
    assert len(shown["Series"]) == 3  # the image's series and one per SR
