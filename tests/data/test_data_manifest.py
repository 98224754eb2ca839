from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from echo.data.manifest import (
    ManifestError,
    ManifestRow,
    assign_split,
    read_manifest,
    row_from_json,
    write_manifest,
)
from echo.findings import ATTRIBUTES, FINDINGS
from echo.report import format_report

CONTRACT_FIELDS = {
    "id", "split", "images", "frontal", "labels", "attributes", "findings", "impression", "report",
    "study_instance_uid", "accession_number", "view_position",
}  # fmt: skip


def test_manifest_lines_follow_the_contract(synthetic_dir: Path) -> None:
    lines = (synthetic_dir / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 16
    for line in lines:
        row = json.loads(line)
        assert set(row) == CONTRACT_FIELDS
        assert row["split"] in ("train", "val", "test")
        assert isinstance(row["images"], list) and row["frontal"] in row["images"]
        for image in row["images"]:
            assert not Path(image).is_absolute() and (synthetic_dir / image).is_file()
        assert set(row["labels"]) == set(FINDINGS)
        assert set(row["labels"].values()) <= {"positive", "negative"}
        positives_with_attributes = {n for n in ATTRIBUTES if row["labels"][n] == "positive"}
        assert set(row["attributes"]) == positives_with_attributes
        for name, values in row["attributes"].items():
            assert set(values) == set(ATTRIBUTES[name])
        assert row["report"] == format_report(row["findings"], row["impression"])
        assert row["view_position"] in ("PA", "AP")


def test_read_manifest_returns_rows_with_path_helpers(
    synthetic_dir: Path, synthetic_rows: list[ManifestRow]
) -> None:
    row = synthetic_rows[0]
    assert row.image_path(synthetic_dir) == synthetic_dir / row.frontal
    assert row.image_paths(synthetic_dir) == tuple(synthetic_dir / image for image in row.images)
    assert read_manifest(synthetic_dir) == synthetic_rows  # a folder means its manifest.jsonl
    assert set(row.positives) == {name for name, value in row.labels.items() if value == "positive"}


def test_write_then_read_round_trips(tmp_path: Path, synthetic_rows: list[ManifestRow]) -> None:
    path = write_manifest(tmp_path / "manifest.jsonl", synthetic_rows)
    assert read_manifest(path) == synthetic_rows
    assert not list(tmp_path.glob(".*partial"))


def test_split_is_deterministic_and_about_80_10_10() -> None:
    splits = [assign_split(3, index) for index in range(5000)]
    assert splits == [assign_split(3, index) for index in range(5000)]
    shares = {name: count / len(splits) for name, count in Counter(splits).items()}
    assert (
        0.77 <= shares["train"] <= 0.83 and 0.08 <= shares["val"] <= 0.12 and 0.08 <= shares["test"] <= 0.12
    )
    assert splits != [assign_split(4, index) for index in range(5000)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": "holdout"}, "split must be one of train, val, test"),
        ({"frontal": "elsewhere.dcm"}, "frontal 'elsewhere.dcm' must be one of images"),
        ({"report": "FINDINGS: x\nIMPRESSION: y"}, "report must equal format_report"),
        ({"labels": {"cardiomegaly": "positive"}}, "labels must cover exactly the finding classes"),
        ({"images": ("/abs/frontal.dcm",), "frontal": "/abs/frontal.dcm"}, "image paths must be relative"),
    ],
)
def test_rows_that_break_the_contract_are_rejected(
    synthetic_rows: list[ManifestRow], change: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        replace(synthetic_rows[0], **change)


def test_positive_finding_with_attributes_needs_them(synthetic_rows: list[ManifestRow]) -> None:
    row = synthetic_rows[0]
    labels = {name: "negative" for name in FINDINGS} | {"pneumothorax": "positive"}
    with pytest.raises(ValueError, match="positive 'pneumothorax' needs attributes \\['side'\\]"):
        replace(row, labels=labels, attributes={})
    with pytest.raises(ValueError, match="attribute pneumothorax.side='bilateral' is not one of"):
        replace(row, labels=labels, attributes={"pneumothorax": {"side": "bilateral"}})
    with pytest.raises(ValueError, match="attributes given for 'edema'"):
        replace(row, labels={name: "negative" for name in FINDINGS}, attributes={"edema": {"side": "left"}})


def test_bad_manifest_lines_are_one_line_errors_naming_the_line(
    tmp_path: Path, synthetic_rows: list[ManifestRow]
) -> None:
    good = json.dumps(synthetic_rows[0].to_json())
    cases = {
        "not json": (f"{good}\n{{broken", "line 2: not valid JSON"),
        "missing": (json.dumps({"id": "x"}), r"line 1: missing field\(s\) split, images"),
        "duplicate": (f"{good}\n{good}", f"line 2: duplicate id '{synthetic_rows[0].id}'"),
        "not object": ("[1, 2]", "line 1: expected a JSON object, got list"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        path.write_text(text)
        with pytest.raises(ManifestError, match=message):
            read_manifest(path)
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "absent.jsonl")


def test_row_from_json_rejects_wrong_types(synthetic_rows: list[ManifestRow]) -> None:
    data = synthetic_rows[0].to_json() | {"images": "studies/a.dcm"}
    with pytest.raises(ValueError, match="images must be a list of paths"):
        row_from_json(data)
