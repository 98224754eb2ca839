from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from echo.data.loaders import load_echo_json, load_examples, load_folder, load_mimic_cxr
from echo.data.loaders.example import MAX_REASONS, LoadReport
from echo.data.loaders.sections import extract_sections
from echo.data.manifest import ManifestRow
from echo.errors import UserError

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def _dicom(path: Path, study_uid: str, accession: str, view: str) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.AccessionNumber = accession
    ds.ViewPosition = view
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64, dtype=np.uint16) * 60).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_sections_from_a_mimic_report() -> None:
    report = extract_sections(MIMIC_REPORT)
    assert report is not None
    assert report.findings.startswith(
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral"
    )
    assert report.findings.endswith("The cardiomediastinal silhouette is normal.")
    assert report.impression == "No acute cardiopulmonary process."


def test_sections_edge_cases() -> None:
    assert extract_sections("The lungs are clear. No effusion.") is None
    combined = extract_sections("INDICATION: cough\nFINDINGS AND IMPRESSION: Normal chest.")
    assert combined is not None and (combined.findings, combined.impression) == ("", "Normal chest.")
    normalised = extract_sections("FINDINGS: Lungs clear.\nIMPRESSION: Normal.")
    assert normalised is not None and (normalised.findings, normalised.impression) == (
        "Lungs clear.",
        "Normal.",
    )
    conclusion = extract_sections(
        "FINDINGS:\nSmall left effusion.\nCONCLUSION:\nEffusion.\nRECOMMENDATION(S): CT."
    )
    assert conclusion is not None and conclusion.impression == "Effusion."


@pytest.fixture()
def site_folder(tmp_path: Path) -> Path:
    study_a, study_b = generate_uid(), generate_uid()
    _dicom(tmp_path / "dicom" / "a1.dcm", study_a, "ACC1", "LL")
    _dicom(tmp_path / "dicom" / "a2.dcm", study_a, "ACC1", "PA")
    _dicom(tmp_path / "dicom" / "b1.dcm", study_b, "ACC2", "AP")
    # a file whose header was cut short
    (tmp_path / "dicom" / "corrupt.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    (tmp_path / "README.txt").write_text("not an image")
    with (tmp_path / "reports.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["AccessionNumber", "Report Text"])
        writer.writerow(["ACC1", MIMIC_REPORT])
        writer.writerow(["ACC2", "FINDINGS: Small left pleural effusion.\nIMPRESSION: Left effusion."])
        writer.writerow(["ACC9", "FINDINGS: Clear.\nIMPRESSION: Normal."])  # no such study
        writer.writerow(["ACC2", ""])  # no text
        writer.writerow(["", "FINDINGS: Clear.\nIMPRESSION: Normal."])  # no key
        writer.writerow(["ACC1", "Lungs clear, heart normal."])  # no sections
    return tmp_path


def test_folder_with_csv_matches_reports_to_dicom_by_accession(site_folder: Path) -> None:
    examples, report = load_folder(site_folder)
    assert [e.id for e in examples] == ["ACC1", "ACC2"]
    first = examples[0]
    assert first.frontal_path.name == "a2.dcm"  # the PA image, not the lateral
    assert {p.name for p in first.image_paths} == {"a1.dcm", "a2.dcm"}
    assert first.impression == "No acute cardiopulmonary process."
    assert first.report == f"FINDINGS: {first.findings}\nIMPRESSION: {first.impression}"
    assert (report.total, report.loaded, report.skipped) == (6, 2, 4)
    assert report.bad_files == 1
    joined = " | ".join(report.reasons)
    for reason in (
        "corrupt.dcm",
        "no DICOM image in the folder has accession_number ACC9",
        "no report text",
        "no images, study_instance_uid or accession_number",
        "report has no FINDINGS or IMPRESSION section",
    ):
        assert reason in joined
    assert report.summary().startswith(
        f"{site_folder / 'reports.csv'}: 2 of 6 loaded, 4 skipped, 1 unreadable file(s)"
    )


def test_folder_with_jsonl_by_study_uid_and_explicit_paths(site_folder: Path) -> None:
    study_b = _dicom(site_folder / "dicom" / "b1.dcm", "1.2.3.4", "ACC2", "AP")
    _dicom(site_folder / "png_study" / "x.dcm", "1.2.3.5", "ACC5", "PA")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(site_folder / "png_study" / "y.png")
    lines = [
        json.dumps(
            {
                "id": "s1",
                "study_instance_uid": "1.2.3.4",
                "findings": "Left effusion.",
                "impression": "Effusion.",
            }
        ),
        json.dumps(
            {"id": "s2", "images": ["png_study/x.dcm", "png_study/y.png"], "report": "IMPRESSION: Normal."}
        ),
        json.dumps({"id": "s3", "images": ["png_study/missing.dcm"], "report": "IMPRESSION: Normal."}),
        "{broken json",
        json.dumps(["not", "an", "object"]),
        json.dumps({"id": "s1", "images": ["png_study/y.png"], "report": "IMPRESSION: Normal."}),
        json.dumps(
            {
                "id": "s4",
                "images": ["png_study/y.png"],
                "frontal": "png_study/x.dcm",
                "report": "IMPRESSION: N.",
            }
        ),
    ]
    (site_folder / "reports.jsonl").write_text("\n".join(lines) + "\n")
    examples, report = load_folder(site_folder, "reports.jsonl")
    assert [e.id for e in examples] == ["s1", "s2"]
    assert examples[0].image_paths == (study_b,) and examples[0].findings == "Left effusion."
    assert examples[1].frontal_path.name == "x.dcm" and examples[1].findings == ""
    assert (report.total, report.loaded, report.skipped) == (7, 2, 5)
    joined = " | ".join(report.reasons)
    for reason in (
        "missing.dcm: no such file",
        "not valid JSON",
        "not a JSON object",
        "duplicate id s1",
        "is not one of the row's images",
    ):
        assert reason in joined


def test_synthetic_manifest_loads_as_a_site_folder(
    synthetic_dir: Path, synthetic_rows: list[ManifestRow]
) -> None:
    examples, report = load_examples(synthetic_dir)
    assert report.loaded == len(synthetic_rows) and report.skipped == 0
    for example, row in zip(examples, synthetic_rows, strict=True):
        assert example.id == row.id and example.report == row.report
        assert example.frontal_path == row.image_path(synthetic_dir)


def test_folder_errors_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        load_folder(tmp_path / "absent")
    with pytest.raises(
        UserError, match="no reports file; add one of manifest.jsonl, reports.jsonl, reports.csv"
    ):
        load_folder(tmp_path)
    (tmp_path / "reports.csv").write_text("patient,comment\n1,x\n")
    with pytest.raises(UserError, match="needs an image column .* found patient, comment"):
        load_folder(tmp_path)


@pytest.fixture()
def mimic_root(tmp_path: Path) -> Path:
    patient = tmp_path / "files" / "p10" / "p10000032"
    _dicom(patient / "s50000001" / "lat.dcm", "1.1", "A1", "LATERAL")
    _dicom(patient / "s50000001" / "pa.dcm", "1.1", "A1", "PA")
    (patient / "s50000001.txt").write_text(MIMIC_REPORT)
    _dicom(patient / "s50000002" / "ap.dcm", "1.2", "A2", "AP")
    (patient / "s50000002.txt").write_text("Portable chest. Lines unchanged.")  # no sections
    _dicom(patient / "s50000003" / "ap.dcm", "1.3", "A3", "AP")  # no report
    (patient / "s50000004.txt").write_text(MIMIC_REPORT)  # no images
    _dicom(patient / "s50000005" / "good.dcm", "1.5", "A5", "AP")
    (patient / "s50000005" / "bad.dcm").write_bytes(b"\x00" * 132)
    (patient / "s50000005.txt").write_text(MIMIC_REPORT)
    jpg_patient = tmp_path / "files" / "p11" / "p11000001"
    (jpg_patient / "s51000001").mkdir(parents=True)
    for name in ("d-lateral", "d-frontal"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(jpg_patient / "s51000001" / f"{name}.jpg")
    (jpg_patient / "s51000001.txt").write_text(MIMIC_REPORT)
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,study_id,ViewPosition\nd-lateral,51000001,LATERAL\nd-frontal,51000001,AP\n"
    )
    return tmp_path


def test_mimic_layout_extracts_sections_and_skips_bad_studies(mimic_root: Path) -> None:
    examples, report = load_mimic_cxr(mimic_root)
    assert [e.id for e in examples] == ["s50000001", "s50000005", "s51000001"]
    assert examples[0].frontal_path.name == "pa.dcm" and len(examples[0].image_paths) == 2
    assert examples[0].impression == "No acute cardiopulmonary process."
    assert [p.name for p in examples[1].image_paths] == ["good.dcm"]
    assert examples[2].frontal_path.name == "d-frontal.jpg"  # view from the metadata file
    assert (report.total, report.loaded, report.skipped, report.bad_files) == (6, 3, 3, 1)
    joined = " | ".join(report.reasons)
    for reason in (
        "s50000002: report has no FINDINGS",
        "s50000003: no report file",
        "s50000004: no image folder",
        "bad.dcm",
    ):
        assert reason in joined
    assert load_examples(mimic_root / "files").report.loaded == 3


def test_mimic_root_must_have_the_layout(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a MIMIC-CXR folder"):
        load_mimic_cxr(tmp_path)


def test_echo_json_items(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    _dicom(tmp_path / "b.dcm", "1.9", "A9", "PA")
    items = [
        {"id": "one", "image": "a.png", "report": "FINDINGS: Clear.\nIMPRESSION: Normal."},
        {"images": ["b.dcm", "a.png"], "findings": "Small left effusion.", "impression": "Effusion."},
        {"image": "missing.png", "report": "FINDINGS: Clear.\nIMPRESSION: Normal."},
        {"image": "a.png"},
        "just a string",
        {"images": [], "report": "IMPRESSION: x"},
        {"id": "one", "image": "a.png", "report": "IMPRESSION: again"},
    ]
    (tmp_path / "eval.json").write_text(json.dumps(items))
    examples, report = load_echo_json(tmp_path / "eval.json")
    assert [e.id for e in examples] == ["one", "item1"]
    assert examples[1].frontal_path == tmp_path / "b.dcm" and examples[1].impression == "Effusion."
    assert (report.total, report.loaded, report.skipped) == (7, 2, 5)
    joined = " | ".join(report.reasons)
    for reason in (
        "item 2: missing.png: no such file",
        "item 3: no report text",
        "item 4: not a JSON object",
        "item 5: images must be a non-empty list",
        "item 6: duplicate id one",
    ):
        assert reason in joined
    assert load_examples(tmp_path / "eval.json").report.loaded == 2


def test_echo_json_file_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="broken.json: not valid JSON"):
        load_echo_json(tmp_path / "broken.json")
    (tmp_path / "object.json").write_text("{}")
    with pytest.raises(UserError, match="expected a JSON list of items, got dict"):
        load_echo_json(tmp_path / "object.json")
    with pytest.raises(UserError, match="no such file"):
        load_echo_json(tmp_path / "absent.json")
    with pytest.raises(UserError, match="unknown data file type"):
        (tmp_path / "data.xml").write_text("<x/>")
        load_examples(tmp_path / "data.xml")


def test_load_report_keeps_only_the_first_reasons() -> None:
    report = LoadReport(source="x")
    for number in range(MAX_REASONS + 5):
        report.skip(f"row {number}", "bad")
    assert report.skipped == MAX_REASONS + 5 and len(report.reasons) == MAX_REASONS
    assert report.reasons[0] == "row 0: bad"
