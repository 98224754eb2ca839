"""`echo-admin status` and `echo-admin studies`: what the operator sees, and what they never see."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from node.config.settings import load_settings
from node.dicom.association_log import AssociationLog, Peer
from node.dicom.ingest import Ingestor, ReceivedInstance
from node.dicom.spool import Spool
from node.ops.admin import main
from node.store.database import migrate, open_database
from node.store.models import Study
from node.store.states import AssociationOutcome, StudyState
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
    assert "queues: gpu 0 waiting, io 0 waiting" in out
    assert "last association: MODALITY1 from 10.1.2.3, released" in out and "1 stored, 0 failed" in out
    assert "open associations: 0" in out


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
            "cannot read the database at postgresql+psycopg://postgres@127.0.0.1:5432/no_such_echo_db",
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
