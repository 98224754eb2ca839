"""A lateral drafted alone (ECHO_DRAFT_LATERAL_ONLY=true) and delivered, then its PA: through a real
`echo-node serve` (SQLite, embedded worker), DCMTK storescu as the modality, the test PACS and RIS.

The PA sends the study back to the queue; the node drafts it again from the PA and sends a corrected
preliminary: an SR with a new SOP Instance UID naming the first SR in its Predecessor Documents
Sequence (dciodvfy finds no error in it), and an ORU with OBR-25 C under a new control id.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from echo.data.synthetic import generate_study, study_case
from node.config.settings import load_settings
from node.delivery.messages import sr_series_uid
from node.store.database import open_database
from node.store.models import Report, Study
from node.store.redraft import REDRAFT_REASON
from node.store.states import StudyState

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture(scope="module")
def node(
    tmp_path_factory, launch, _module_pacs, _module_ris, model_dir, environment, free_ports, dcmtk, wait
):
    port = free_ports()
    data_dir = tmp_path_factory.mktemp("redraft")
    env = environment(data_dir, port, model_dir, pacs=_module_pacs.address, ris=_module_ris.address)
    env["ECHO_DRAFT_LATERAL_ONLY"] = "true"
    env["ECHO_DRAFT_GATE"] = "false"  # the re-draft flow is under test, not the lateral draft's text
    launch("serve", ["-m", "node.serve.cli", "serve"], env)
    echo = ("echoscu", "-aet", "STORESCU", "-aec", "ECHO", "127.0.0.1", str(port))
    wait(lambda: dcmtk(*echo).returncode == 0, 60, "the embedded node", launch.logs)
    database = open_database(load_settings(data_dir=data_dir))
    yield port, database
    database.dispose()


def test_a_pa_after_a_delivered_lateral_draft_is_sent_as_a_corrected_preliminary(
    node, pacs, ris, dcmtk, wait, launch, tmp_path: Path
) -> None:
    port, database = node
    index = next(i for i in range(200) if study_case(3, i).acquisition.lateral)
    row = generate_study(3, index, tmp_path / "study", size=128)
    frontal_file, lateral_file = (tmp_path / "study" / image for image in row.images)
    frontal = dcmread(frontal_file)

    def send(path: Path) -> None:
        sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "ECHO", "127.0.0.1", str(port), str(path))
        assert sent.returncode == 0, sent.stderr + launch.logs()

    def study() -> Study | None:
        with database.sessions() as session:
            return session.scalars(
                select(Study).where(Study.study_instance_uid == frontal.StudyInstanceUID)
            ).first()

    def delivered_with(srs: int) -> bool:
        current = study()
        assert current is None or current.state is not StudyState.FAILED, launch.logs()
        return current is not None and current.state is StudyState.DELIVERED and len(pacs.received) == srs

    send(lateral_file)
    wait(lambda: delivered_with(1) and len(ris.received) == 1, 60, "the lateral draft delivered", launch.logs)
    send(frontal_file)
    wait(
        lambda: delivered_with(2) and len(ris.received) == 2, 60, "the corrected draft delivered", launch.logs
    )

    with database.sessions() as session:
        first, second = session.scalars(select(Report).order_by(Report.revision)).all()
        reasons = [event.reason for event in session.get_one(Study, first.study_id).events]
    assert (first.revision, second.revision, second.supersedes_id) == (1, 2, first.id)
    assert first.view_reason.startswith("fallback: only lateral views")
    assert "View Position PA" in second.view_reason
    assert REDRAFT_REASON in reasons

    old_sr, new_sr = pacs.received
    assert new_sr.SOPInstanceUID != old_sr.SOPInstanceUID
    (predecessor,) = new_sr.PredecessorDocumentsSequence
    assert predecessor.StudyInstanceUID == frontal.StudyInstanceUID
    (series,) = predecessor.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == old_sr.SeriesInstanceUID == sr_series_uid(old_sr.SOPInstanceUID)
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old_sr.SOPInstanceUID
    assert new_sr.PreliminaryFlag == "PRELIMINARY" and new_sr.VerificationFlag == "UNVERIFIED"
    path = tmp_path / "corrected.dcm"
    new_sr.save_as(path, enforce_file_format=True)
    checked = dcmtk("dciodvfy", str(path))
    assert [line for line in checked.stderr.splitlines() if line.startswith("Error")] == [], checked.stderr

    old_oru, new_oru = ris.received
    assert str(old_oru.segment("OBR")[25]) == "P"
    assert str(new_oru.segment("OBR")[25]) == "C"
    assert {str(obx[11]) for obx in new_oru.segments("OBX")} == {"C"}
    assert str(new_oru.segment("MSH")[10]) != str(old_oru.segment("MSH")[10])
