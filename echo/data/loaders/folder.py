"""A site's folder of DICOM files with a CSV or JSONL file of reports.

Each report row finds its images by explicit paths (`images` / `image`, relative to the folder),
or by `study_instance_uid` or `accession_number` matched against the DICOM headers in the folder.
Its text is `findings` + `impression`, or a free-text `report` with FINDINGS / IMPRESSION headers.
Column names are matched case-insensitively with common aliases (StudyInstanceUID, accession,
image_path ...). Our own manifest.jsonl is such a file, so a synthetic data set loads here too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from echo.data.loaders.example import Example, LoadReport, LoadResult
from echo.data.loaders.images import check_image, choose_frontal, is_dicom, read_header, view_position
from echo.data.loaders.sections import report_from_fields
from echo.data.preprocess import ImageReadError
from echo.errors import UserError

REPORT_FILES = ("manifest.jsonl", "reports.jsonl", "reports.csv")
_ALIASES = {
    "id": "id",
    "study_id": "id",
    "images": "images",
    "image": "images",
    "image_path": "images",
    "image_paths": "images",
    "path": "images",
    "paths": "images",
    "file": "images",
    "files": "images",
    "frontal": "frontal",
    "studyinstanceuid": "study_instance_uid",
    "study_instance_uid": "study_instance_uid",
    "study_uid": "study_instance_uid",
    "accessionnumber": "accession_number",
    "accession_number": "accession_number",
    "accession": "accession_number",
    "report": "report",
    "report_text": "report",
    "text": "report",
    "findings": "findings",
    "impression": "impression",
}
_LOCATORS = ("images", "study_instance_uid", "accession_number")
_TEXTS = ("report", "findings", "impression")


def _canonical(key: str) -> str:
    normal = re.sub(r"[\s\-]+", "_", key.strip().lower())
    return _ALIASES.get(normal, _ALIASES.get(normal.replace("_", ""), normal))


def _rows(path: Path, report: LoadReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row with canonical keys) for each data row; malformed lines are skipped and counted."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read reports file ({error})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))  # keeps quoted multi-line reports whole
        columns = {_canonical(name) for name in reader.fieldnames or []}
        if not columns & set(_LOCATORS) or not columns & set(_TEXTS):
            raise UserError(
                f"{path}: needs an image column ({', '.join(_LOCATORS)}) and a text column "
                f"({', '.join(_TEXTS)}); found {', '.join(reader.fieldnames or []) or 'no header'}"
            )
        try:
            for row in reader:
                yield (
                    f"{path.name} line {reader.line_num}",
                    {_canonical(k): v for k, v in row.items() if k is not None},
                )
        except csv.Error as error:
            raise UserError(f"{path} line {reader.line_num}: malformed CSV ({error})") from None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            report.total += 1
            report.skip(where, f"not valid JSON ({error.msg})")
            continue
        if not isinstance(data, dict):
            report.total += 1
            report.skip(where, "not a JSON object")
            continue
        yield where, {_canonical(key): value for key, value in data.items()}


class _DicomIndex:
    """Image files of the folder by StudyInstanceUID and AccessionNumber, built on first use."""

    def __init__(self, folder: Path, exclude: Path, report: LoadReport) -> None:
        self.by_study: dict[str, list[tuple[Path, str]]] = defaultdict(list)
        self.by_accession: dict[str, list[tuple[Path, str]]] = defaultdict(list)
        for path in sorted(folder.rglob("*")):
            if (
                not path.is_file()
                or path == exclude
                or any(part.startswith(".") for part in path.relative_to(folder).parts)
            ):
                continue
            if not is_dicom(path):
                continue
            try:
                header = read_header(path)
            except ImageReadError as error:
                report.bad_file(str(path.relative_to(folder)), str(error).split(": ", 1)[-1])
                continue
            entry = (path, str(header.get("ViewPosition", "") or "").upper())
            if header.get("StudyInstanceUID"):
                self.by_study[str(header.StudyInstanceUID)].append(entry)
            if header.get("AccessionNumber"):
                self.by_accession[str(header.AccessionNumber)].append(entry)


def _split_paths(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(item) for item in value]
    if isinstance(value, str):
        return [part.strip() for part in re.split(r"[;|]", value) if part.strip()]
    raise ValueError(f"images must be a path or a list of paths, got {type(value).__name__}")


def _find_reports(folder: Path, reports: str | Path | None) -> Path:
    if reports is not None:
        path = Path(reports)
        if not path.is_absolute() and not path.exists():
            path = folder / path
        if not path.is_file():
            raise UserError(f"{reports}: no such reports file")
        return path
    for name in REPORT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{folder}: no reports file; add one of {', '.join(REPORT_FILES)} or name it explicitly")


def load_folder(
    folder: str | Path,
    reports: str | Path | None = None,
    verify_images: bool = False,
    show_progress: bool = False,
) -> LoadResult:
    """Examples for every usable report row; bad rows and unreadable files are counted and skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    reports_path = _find_reports(folder, reports)
    report = LoadReport(source=str(reports_path))
    index: _DicomIndex | None = None
    examples: list[Example] = []
    seen: set[str] = set()
    rows: Any = _rows(reports_path, report)
    if show_progress:
        from rich.progress import track

        rows = track(list(rows), description="reading reports")
    for where, row in rows:
        report.total += 1
        try:
            text = report_from_fields(row.get("findings"), row.get("impression"), row.get("report"))
            if row.get("images"):
                paths = [
                    Path(p) if Path(p).is_absolute() else folder / p for p in _split_paths(row["images"])
                ]
                for path in paths:
                    check_image(path, verify_images)
                views = [view_position(path) for path in paths]
            else:
                key = "study_instance_uid" if row.get("study_instance_uid") else "accession_number"
                value = str(row.get(key) or "").strip()
                if not value:
                    raise ValueError("no images, study_instance_uid or accession_number")
                if index is None:
                    index = _DicomIndex(folder, reports_path, report)
                entries = (index.by_study if key == "study_instance_uid" else index.by_accession).get(value)
                if not entries:
                    raise ValueError(f"no DICOM image in the folder has {key} {value}")
                paths, views = [entry[0] for entry in entries], [entry[1] for entry in entries]
                if verify_images:
                    for path in paths:
                        check_image(path, verify=True)
            if row.get("frontal"):
                frontal = (
                    Path(row["frontal"]) if Path(row["frontal"]).is_absolute() else folder / row["frontal"]
                )
                if frontal not in paths:
                    raise ValueError(f"frontal {row['frontal']} is not one of the row's images")
            else:
                frontal = choose_frontal(paths, views)
            example_id = str(
                row.get("id") or row.get("study_instance_uid") or row.get("accession_number") or where
            )
            if example_id in seen:
                raise ValueError(f"duplicate id {example_id}")
        except (ValueError, ImageReadError) as error:
            report.skip(where, str(error))
            continue
        seen.add(example_id)
        examples.append(Example.make(example_id, tuple(paths), frontal, text.findings, text.impression))
        report.loaded += 1
    return LoadResult(examples, report)
