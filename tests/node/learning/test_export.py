"""`echo-admin dataset export`: signed studies out as echo-train's manifest, split by patient,
de-identified, burned-in images left out, nothing identifying anywhere in the folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from echo.data.loaders import load_examples
from echo.data.manifest import read_manifest
from echo.data.preprocess import load_pixels
from node.config.settings import load_settings
from node.learning.bulk_import import run_import
from node.learning.deid import SECRET_NAME, pseudonym, site_secret
from node.learning.export import ExportRequest, export_dataset, split_of
from node.learning.signed import SignedReportIn, store_signed
from node.ops.admin import main
from node.store.database import Database, migrate, open_database
from node.store.states import SignedSource

LEFT = "FINDINGS: Small left pleural effusion. Heart size normal.\nIMPRESSION: Left effusion."
CLEAR = "FINDINGS: Lungs are clear. No effusion or pneumothorax.\nIMPRESSION: No acute disease."


class Archive:
    """DICOM files and a reports CSV, written the way a site's archive holds them."""

    def __init__(self, root: Path, dicom: SimpleNamespace) -> None:
        self.root, self.dicom = root, dicom
        self.folder = root / "archive"
        self.rows: list[tuple[str, str]] = []
        self.studies: dict[str, SimpleNamespace] = {}  # accession -> what was written

    def study(
        self, accession: str, patient: str, report: str | None, views=("PA",), burned=(), **header
    ) -> SimpleNamespace:
        uid = generate_uid()
        written = []
        for number, view in enumerate(views, start=1):
            image = self.dicom.chest_image(study_uid=uid, accession=accession)
            image.PatientID, image.ViewPosition, image.InstanceNumber = patient, view, number
            image.PatientName = f"Patient^{patient}"
            image.BurnedInAnnotation = "YES" if view in burned else "NO"
            for keyword, value in header.items():
                setattr(image, keyword, value)
            written.append(self.dicom.save(image, self.folder / accession / f"{number}.dcm"))
        if report is not None:
            self.rows.append((accession, report))
        self.studies[accession] = SimpleNamespace(uid=uid, patient=patient, files=written)
        return self.studies[accession]

    def reports(self) -> Path:
        path = self.root / "reports.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["accession", "report"])
            writer.writerows(self.rows)
        return path


@pytest.fixture
def site(sqlite_db: Database, tmp_path: Path, dicom: SimpleNamespace) -> SimpleNamespace:
    archive = Archive(tmp_path, dicom)
    for number in range(24):  # patients P00..P11 with two studies each
        patient = f"P{number // 2:02d}"
        archive.study(f"A{number:02d}", patient, LEFT if number % 3 == 0 else CLEAR, views=("PA", "LL"))
    archive.study("B1", "Q1", CLEAR, views=("PA",), burned=("PA",))  # its only frontal burned in
    archive.study("B2", "Q2", LEFT, views=("PA", "AP"), burned=("PA",))  # the AP goes
    archive.study("L1", "Q3", CLEAR, views=("LL",))  # a lateral alone
    archive.study("K1", "Q4", CLEAR, BodyPartExamined="KNEE")
    archive.study("S1", "Q5", "FINDINGS: Pleural effusion.\nIMPRESSION: Effusion.")  # no side
    archive.study("N1", "Q6", None)  # never signed
    archive.study(  # the report names the patient's id and the accession
        "T12345",
        "Q7-0007",
        "FINDINGS: Q7-0007 has a left effusion, new since 2024-03-04 (T12345).\nIMPRESSION: Left.",
    )
    settings = load_settings(data_dir=tmp_path / "db")
    run_import(settings, sqlite_db.sessions, archive.reports(), archive.folder)
    return SimpleNamespace(archive=archive, settings=settings, database=sqlite_db, out=tmp_path / "export")


def export(site: SimpleNamespace, **options) -> object:
    request = ExportRequest(out=site.out, **{"val_share": 0.25, "test_share": 0.25, **options})
    return export_dataset(site.settings, site.database.sessions, request)


def by_accession(site: SimpleNamespace) -> dict[str, dict]:
    secret = site_secret(site.settings.data_dir)
    rows = {row.id: row for row in read_manifest(site.out)}
    return {
        accession: rows[f"s{pseudonym(secret, 'study', study.uid)}"]
        for accession, study in site.archive.studies.items()
        if f"s{pseudonym(secret, 'study', study.uid)}" in rows
    }


def test_signed_frontal_studies_are_exported_split_by_patient_and_echo_reads_them_back(site) -> None:
    # A pinned secret: with a random one, about 1 run in 30 puts none of the 14 patients in one split.
    site.settings.data_dir.mkdir(parents=True, exist_ok=True)
    (site.settings.data_dir / SECRET_NAME).write_text("0" * 64 + "\n")
    summary = export(site)

    assert summary.considered == 30 and summary.exported == 26
    assert summary.images == 26 and summary.burned_in == 2
    assert dict(summary.left_out.reasons) == {
        "every frontal image has burned-in annotation": 1,
        "not a frontal chest radiograph (lateral view only: waiting for a frontal)": 1,
        "not a frontal chest radiograph (body part KNEE is not CHEST)": 1,
        "pleural_effusion named without the side a manifest row needs": 1,
    }
    rows = by_accession(site)
    assert set(rows) == {f"A{n:02d}" for n in range(24)} | {"B2", "T12345"}
    secret = site_secret(site.settings.data_dir)
    for accession, row in rows.items():
        patient = site.archive.studies[accession].patient
        assert row.split == split_of(secret, patient, 0.25, 0.25)
    splits_of_patients = {}
    for accession, row in rows.items():
        splits_of_patients.setdefault(site.archive.studies[accession].patient, set()).add(row.split)
    assert all(len(splits) == 1 for splits in splits_of_patients.values())  # never in two splits
    assert {row.split for row in rows.values()} == {"train", "val", "test"}
    assert sum(summary.splits.values()) == 26

    a00 = rows["A00"]  # a PA and a lateral: the PA alone goes, with the signed text and its labels
    assert a00.images == (a00.frontal,) and a00.view_position == "PA"
    assert a00.report == LEFT
    assert a00.labels["pleural_effusion"] == "positive" and a00.attributes == {
        "pleural_effusion": {"side": "left"}
    }
    assert rows["A01"].labels["pleural_effusion"] == "negative"
    assert rows["B2"].view_position == "AP" and len(rows["B2"].images) == 1
    assert rows["T12345"].findings == "[removed] has a left effusion, new since [date] ([removed])."

    examples, report = load_examples(site.out / "manifest.jsonl")  # echo's site-data loader too
    assert report.loaded == 26 and report.skipped == 0
    pixels = load_pixels(site.out / a00.frontal)
    source = load_pixels(site.archive.studies["A00"].files[0])
    assert np.array_equal(pixels, source)
    assert dcmread(site.out / a00.frontal).StudyInstanceUID == a00.study_instance_uid
    assert a00.study_instance_uid != site.archive.studies["A00"].uid


def test_nothing_of_the_patients_is_in_the_export_and_nothing_is_written_elsewhere(
    site, tmp_path: Path
) -> None:
    before = {path for path in tmp_path.rglob("*") if path.is_file()}

    export(site)

    after = {path for path in tmp_path.rglob("*") if path.is_file()}
    assert {path for path in after - before if not path.is_relative_to(site.out)} == {
        site.settings.data_dir / "site-secret"
    }
    # Long values are looked for anywhere in every file; short ones (A00, P00) would turn up by chance
    # inside random pseudonyms, so they are compared with the attributes that could hold them.
    secrets_ = ["Patient^", "MRN-SECRET", "20250102", "Doe", "T12345", "Q7-0007"]
    for study in site.archive.studies.values():
        secrets_ += [study.uid] + [str(dcmread(path).SOPInstanceUID) for path in study.files]
    short = {
        value for accession, study in site.archive.studies.items() for value in (accession, study.patient)
    }
    for path in site.out.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert [value for value in secrets_ if value.encode() in content] == [], path
            if path.suffix == ".dcm":
                image = dcmread(path)
                held = {str(image.get(key)) for key in ("AccessionNumber", "PatientID", "StudyID")}
                assert not held & short and "Patient" not in str(image.PatientName), path
    readme = (site.out / "README.txt").read_text()
    assert "PS3.15" in readme and "by patient" in readme and "Burned In Annotation YES" in readme


def test_a_second_export_agrees_with_the_first(site) -> None:
    export(site)
    first = (site.out / "manifest.jsonl").read_bytes()
    files = sorted(path.relative_to(site.out) for path in (site.out / "images").rglob("*.dcm"))

    export(site)

    assert (site.out / "manifest.jsonl").read_bytes() == first
    assert sorted(path.relative_to(site.out) for path in (site.out / "images").rglob("*.dcm")) == files


def test_only_the_current_signed_report_in_the_window_counts(site) -> None:
    with site.database.sessions.begin() as session:
        store_signed(
            session,
            SignedReportIn(
                source=SignedSource.HL7,
                message_key="RIS|correction",
                message_type="ORU^R01",
                result_status="C",
                findings="Right pneumothorax.",
                impression="Right pneumothorax.",
                text="corrected",
                accession_number="A01",
            ),
        )
    export(site)
    corrected = by_accession(site)["A01"]
    assert corrected.findings == "Right pneumothorax." and corrected.labels["pneumothorax"] == "positive"

    from datetime import UTC, datetime

    summary = export(site, since=datetime(2099, 1, 1, tzinfo=UTC))
    assert (summary.considered, summary.exported) == (0, 0)
    assert read_manifest(site.out) == []


def test_an_out_folder_that_is_not_an_earlier_export_is_refused(site) -> None:
    site.out.mkdir()
    (site.out / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(Exception, match="not empty and not an earlier export"):
        export(site)
    assert (site.out / "holiday.jpg").is_file()


# --- echo-admin dataset export --------------------------------------------------------------------


def run_admin(args: list[str], capsys, monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["echo-admin", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def test_echo_admin_dataset_export(tmp_path: Path, dicom: SimpleNamespace, capsys, monkeypatch) -> None:
    data_dir = tmp_path / "node"
    database = open_database(load_settings(data_dir=data_dir))
    migrate(database.engine)
    archive = Archive(tmp_path, dicom)
    archive.study("A1", "P1", LEFT)
    archive.study("A2", "P2", CLEAR, burned=("PA",))
    run_import(load_settings(data_dir=data_dir), database.sessions, archive.reports(), archive.folder)
    database.dispose()
    out = tmp_path / "set"

    code, stdout, err = run_admin(
        ["dataset", "export", "--out", str(out), "--until", "2999-12-31"],
        capsys,
        monkeypatch,
        ECHO_DATA_DIR=str(data_dir),
    )

    assert (code, err) == (0, "")
    assert "exported: 1 studies" in stdout and "1 images with burned-in annotation" in stdout
    assert "1 every frontal image has burned-in annotation" in stdout
    assert [json.loads(line)["frontal"] for line in (out / "manifest.jsonl").read_text().splitlines()] == [
        read_manifest(out)[0].frontal
    ]
    with database.sessions() as session:
        assert session.execute(select(1)).scalar() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--val-share", "0.6", "--test-share", "0.5"],
            "--val-share and --test-share must each be in [0, 1)",
        ),
        (["--since", "yesterday"], "--since 'yesterday' is not a date YYYY-MM-DD"),
        (["--since", "2025-02-01", "--until", "2025-01-01"], "--until is before --since"),
    ],
)
def test_echo_admin_dataset_export_refuses_bad_options_in_one_line(
    tmp_path: Path, args, message, capsys, monkeypatch
) -> None:
    data_dir = tmp_path / "node"
    database = open_database(load_settings(data_dir=data_dir))
    migrate(database.engine)
    database.dispose()
    code, _, err = run_admin(
        ["dataset", "export", "--out", str(tmp_path / "o"), *args],
        capsys,
        monkeypatch,
        ECHO_DATA_DIR=str(data_dir),
    )
    assert (
        code == 2 and err.startswith(f"echo-admin: error: {message}") and len(err.strip().splitlines()) == 1
    )
