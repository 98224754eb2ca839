"""`echo-admin import`: an archive's images go through the node's ingest and are never drafted, its
signed reports are stored once and matched; a re-run adds nothing, a crashed run is finished by the next."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from node.config.settings import load_settings
from node.dicom.assembly import StudyAssembler
from node.dicom.ingest import Ingestor
from node.learning import bulk_import
from node.learning.bulk_import import run_import
from node.learning.historical import IMPORT_AE, IMPORTED_REASON
from node.learning.signed import SignedReportIn, store_signed
from node.ops.admin import main
from node.store.database import Database, migrate, open_database
from node.store.models import Association, Instance, SignedReport, Study, StudyEvent
from node.store.states import AssociationOutcome, SignedSource, StudyState

REPORT = "FINDINGS: Small left pleural effusion.\nIMPRESSION: Left effusion."


@pytest.fixture
def archive(tmp_path: Path, dicom: SimpleNamespace) -> SimpleNamespace:
    """Two studies (three images), a text file and a DICOM file ingest refuses; five report rows."""
    folder = tmp_path / "archive"
    uids = {"ACC1": generate_uid(), "ACC2": generate_uid()}
    for name, accession, patient, view in (
        ("a/1-pa.dcm", "ACC1", "PAT-A", "PA"),
        ("a/1-lat.dcm", "ACC1", "PAT-A", "LL"),
        ("b/2-pa.dcm", "ACC2", "PAT-B", "PA"),
    ):
        image = dicom.chest_image(study_uid=uids[accession], accession=accession)
        image.PatientID, image.ViewPosition = patient, view
        dicom.save(image, folder / name)
    (folder / "notes.txt").write_text("not an image")
    broken = dicom.chest_image(accession="ACC3")
    del broken.SeriesInstanceUID
    dicom.save(broken, folder / "broken.dcm")
    reports = tmp_path / "reports.csv"
    with reports.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Accession", "Report", "signed_at"])
        writer.writerow(["ACC1", REPORT, "2025-01-02T10:00:00"])
        writer.writerow(["ACC2", "FINDINGS: Lungs clear.\nIMPRESSION: Normal.", ""])
        writer.writerow(["ACC9", "FINDINGS: Heart enlarged.\nIMPRESSION: Cardiomegaly.", ""])
        writer.writerow(["", REPORT, ""])
        writer.writerow(["ACC4", "no sections here", ""])
    return SimpleNamespace(folder=folder, reports=reports, uids=uids)


@pytest.fixture
def settings(sqlite_db: Database, tmp_path: Path):
    return load_settings(data_dir=tmp_path / "db")  # the data dir sqlite_db was made in


def counts(database: Database) -> tuple[int, ...]:
    with database.sessions() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table))
            for table in (Study, Instance, SignedReport, StudyEvent)
        )


def states(database: Database) -> dict[str, tuple[StudyState, str | None]]:
    with database.sessions() as session:
        return {
            study.accession_number: (study.state, study.skip_reason)
            for study in session.scalars(select(Study))
        }


def test_an_archive_is_imported_as_a_pacs_would_send_it_never_drafted_and_a_rerun_adds_nothing(
    sqlite_db: Database, settings, archive: SimpleNamespace, publisher
) -> None:
    first = run_import(settings, sqlite_db.sessions, archive.reports, archive.folder)

    assert (first.files_stored, first.files_already, first.unreadable.count) == (3, 0, 2)
    assert first.unreadable.examples == [  # headers are read first, then the files sent
        "notes.txt: not a DICOM file",
        "broken.dcm: SeriesInstanceUID is missing",
    ]
    assert first.studies_settled == 2
    assert (first.reports_stored, first.reports_duplicate, first.refused.count) == (3, 0, 2)
    assert first.refused.examples == [  # the line a record starts on (reports span two lines)
        "reports.csv line 8: no accession or study_uid",
        "reports.csv line 10: report has no FINDINGS or IMPRESSION section",
    ]
    assert (first.matched, first.unmatched) == (2, 1)
    skipped = (StudyState.SKIPPED, IMPORTED_REASON)
    assert states(sqlite_db) == {"ACC1": skipped, "ACC2": skipped}
    with sqlite_db.sessions() as session:
        paths = session.scalars(select(Instance.path)).all()
        assert all(Path(path).is_file() and Path(path).is_relative_to(settings.spool_dir) for path in paths)
        [association] = session.scalars(select(Association)).all()
        assert (association.calling_ae, association.outcome, association.files_stored) == (
            IMPORT_AE,
            AssociationOutcome.RELEASED,
            3,
        )
        signed = session.scalars(select(SignedReport).where(SignedReport.accession_number == "ACC1")).one()
        assert signed.source is SignedSource.IMPORT and signed.study_id is not None
        assert (
            signed.message_key.startswith("import|ACC1|")
            and len(signed.message_key) == len("import|ACC1|") + 16
        )
        assert signed.signed_at is not None and signed.signed_at.hour == 10
    assert StudyAssembler(sqlite_db.sessions, 0, publisher).sweep().queued == []
    before = counts(sqlite_db)

    again = run_import(settings, sqlite_db.sessions, archive.reports, archive.folder)

    assert (again.files_stored, again.files_already, again.studies_settled) == (0, 3, 0)
    assert (again.reports_stored, again.reports_duplicate, again.refused.count) == (0, 3, 2)
    assert (again.matched, again.unmatched) == (2, 1)
    assert counts(sqlite_db) == before
    assert publisher.published == []


def test_a_crash_half_way_through_the_images_is_finished_by_the_next_run(
    sqlite_db: Database, settings, archive: SimpleNamespace, publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store, calls = Ingestor.store, []

    def crash_on_the_third(self, received):  # broken.dcm (refused), ACC1's first image, then ACC1's second
        calls.append(received.sop_instance_uid)
        if len(calls) == 3:
            raise RuntimeError("power cut")
        return real_store(self, received)

    monkeypatch.setattr(Ingestor, "store", crash_on_the_third)
    with pytest.raises(RuntimeError, match="power cut"):
        run_import(settings, sqlite_db.sessions, archive.reports, archive.folder)
    # The study the crash stopped in is set aside, never left for assembly to draft.
    assert states(sqlite_db) == {"ACC1": (StudyState.SKIPPED, IMPORTED_REASON)}
    assert StudyAssembler(sqlite_db.sessions, 0, publisher).sweep().queued == []
    with sqlite_db.sessions() as session:
        assert session.scalars(select(Association.outcome)).all() == [AssociationOutcome.ABORTED]
        assert session.scalar(select(func.count()).select_from(SignedReport)) == 0
    monkeypatch.setattr(Ingestor, "store", real_store)

    done = run_import(settings, sqlite_db.sessions, archive.reports, archive.folder)

    assert (done.files_stored, done.files_already) == (2, 1)
    assert done.reports_stored == 3 and (done.matched, done.unmatched) == (2, 1)
    skipped = (StudyState.SKIPPED, IMPORTED_REASON)
    assert states(sqlite_db) == {"ACC1": skipped, "ACC2": skipped}
    assert counts(sqlite_db)[:3] == (2, 3, 3)
    assert StudyAssembler(sqlite_db.sessions, 0, publisher).sweep().queued == []


def test_a_crash_among_the_reports_is_finished_by_the_next_run(
    sqlite_db: Database, settings, archive: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def crash_on_the_second(session, incoming):
        calls.append(incoming.message_key)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return store_signed(session, incoming)

    monkeypatch.setattr(bulk_import, "store_signed", crash_on_the_second)
    with pytest.raises(RuntimeError, match="killed"):
        run_import(settings, sqlite_db.sessions, archive.reports, archive.folder)
    monkeypatch.setattr(bulk_import, "store_signed", store_signed)

    done = run_import(settings, sqlite_db.sessions, archive.reports, archive.folder)

    assert (done.files_already, done.reports_stored, done.reports_duplicate) == (3, 3, 0)
    assert counts(sqlite_db)[:3] == (2, 3, 3)


def test_a_killed_import_leaves_its_study_waiting_and_the_next_run_settles_it(
    sqlite_db: Database, settings, archive: SimpleNamespace, publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_store, calls = Ingestor.store, []

    def killed_on_the_third(self, received):
        calls.append(received)
        if len(calls) == 3:
            raise RuntimeError("SIGKILL")
        return real_store(self, received)

    # A kill runs no clean-up: nothing is settled and the association stays open.
    monkeypatch.setattr(Ingestor, "store", killed_on_the_third)
    monkeypatch.setattr(bulk_import, "settle", lambda sessions, ids: [])
    monkeypatch.setattr(bulk_import, "close_association", lambda *args: None)
    with pytest.raises(RuntimeError):
        run_import(settings, sqlite_db.sessions, None, archive.folder)
    monkeypatch.undo()
    assert states(sqlite_db) == {"ACC1": (StudyState.RECEIVED, None)}
    assert StudyAssembler(sqlite_db.sessions, 0, publisher).sweep().queued == []  # the open import holds it

    done = run_import(settings, sqlite_db.sessions, None, archive.folder)

    assert done.studies_settled == 2 and done.files_stored == 2
    skipped = (StudyState.SKIPPED, IMPORTED_REASON)
    assert states(sqlite_db) == {"ACC1": skipped, "ACC2": skipped}
    with sqlite_db.sessions() as session:
        assert session.scalars(select(Association.outcome).order_by(Association.id)).all() == [
            AssociationOutcome.ABORTED,
            AssociationOutcome.RELEASED,
        ]


def test_a_report_before_its_images_is_matched_when_they_are_imported(
    sqlite_db: Database, settings, archive: SimpleNamespace
) -> None:
    reports_only = run_import(settings, sqlite_db.sessions, archive.reports, None)
    assert (reports_only.matched, reports_only.unmatched) == (0, 3)

    run_import(settings, sqlite_db.sessions, None, archive.folder)
    again = run_import(settings, sqlite_db.sessions, archive.reports, None)

    assert (again.reports_duplicate, again.matched, again.unmatched) == (3, 2, 1)


def test_the_ris_report_of_an_order_wins_over_the_archive(
    sqlite_db: Database, settings, archive: SimpleNamespace
) -> None:
    with sqlite_db.sessions.begin() as session:
        store_signed(
            session,
            SignedReportIn(
                source=SignedSource.HL7,
                message_key="RIS|1",
                message_type="ORU^R01",
                findings="Live.",
                impression="Live.",
                text="FINDINGS: Live.\nIMPRESSION: Live.",
                accession_number="ACC1",
            ),
        )

    summary = run_import(settings, sqlite_db.sessions, archive.reports, None)

    assert summary.reports_stored == 2
    assert "reports.csv line 2: the RIS already sent a signed report for this order (kept)" in (
        summary.refused.examples
    )


# --- echo-admin import ----------------------------------------------------------------------------


def run_admin(args: list[str], capsys, monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["echo-admin", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_echo_admin_import_prints_what_it_did(
    tmp_path: Path, archive: SimpleNamespace, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "node"
    database = open_database(load_settings(data_dir=data_dir))
    migrate(database.engine)
    database.dispose()
    args = ["import", "--reports", str(archive.reports), "--dicom", str(archive.folder)]

    code, out, err = run_admin(args, capsys, monkeypatch, ECHO_DATA_DIR=str(data_dir))

    assert (code, err) == (0, "")
    assert "images: 3 stored, 0 already there, 2 unreadable" in out
    assert "1 not a DICOM file; 1 SeriesInstanceUID is missing" in out
    assert "studies: 2 set aside as historical (skipped, never drafted)" in out
    assert "signed reports: 3 stored, 0 duplicates, 2 refused" in out
    assert "matched to their study: 2; waiting for their study: 1" in out
    assert "PAT-A" not in out and "Doe" not in out

    code, out, _ = run_admin(args, capsys, monkeypatch, ECHO_DATA_DIR=str(data_dir))
    assert code == 0 and "images: 0 stored, 3 already there" in out and "0 stored, 3 duplicates" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --reports FILE, --dicom DIR, or both"),
        (["--reports", "/nonexistent.csv"], "--reports /nonexistent.csv: no such file"),
        (["--dicom", "/nonexistent"], "--dicom /nonexistent: no such folder"),
    ],
)
def test_echo_admin_import_refuses_bad_input_in_one_line(
    tmp_path: Path, args: list[str], message: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_admin(["import", *args], capsys, monkeypatch, ECHO_DATA_DIR=str(tmp_path))
    assert (code, err.strip()) == (2, f"echo-admin: error: {message}")


def test_a_reports_file_without_an_order_column_stops_before_anything_is_stored(
    sqlite_db: Database, settings, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,text\nx,FINDINGS: a\n")
    with pytest.raises(Exception, match="needs an order column"):
        run_import(settings, sqlite_db.sessions, bad, None)
    assert counts(sqlite_db) == (0, 0, 0, 0)


@pytest.mark.integration
def test_an_archive_imports_once_on_postgresql_too(
    tmp_path: Path, archive: SimpleNamespace, publisher
) -> None:
    import uuid

    import psycopg

    name = f"echo_import_{uuid.uuid4().hex[:12]}"
    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    settings = load_settings(
        data_dir=tmp_path / "pg", database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    )
    database = open_database(settings)
    try:
        migrate(database.engine)
        first = run_import(settings, database.sessions, archive.reports, archive.folder)
        again = run_import(settings, database.sessions, archive.reports, archive.folder)
        assert (first.files_stored, first.reports_stored, first.matched, first.unmatched) == (3, 3, 2, 1)
        assert (again.files_already, again.reports_duplicate, again.studies_settled) == (3, 3, 0)
        assert set(states(database).values()) == {(StudyState.SKIPPED, IMPORTED_REASON)}
        assert StudyAssembler(database.sessions, 0, publisher).sweep().queued == []
    finally:
        database.dispose()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
