"""The MIMIC-CXR layout: files/pXX/pXXXXXXXX/sXXXXXXXX/*.dcm with the report sXXXXXXXX.txt beside it.

The study's report is free text; its FINDINGS and IMPRESSION sections are extracted. The frontal
image is chosen from the DICOM ViewPosition; for the JPG release (MIMIC-CXR-JPG) the views come
from `mimic-cxr-2.0.0-metadata.csv(.gz)` in the root when present. A study without a report, a
report without either section, or a study without a readable image is skipped; an unreadable
image file is skipped alone.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Any

from echo.data.loaders.example import Example, LoadReport, LoadResult
from echo.data.loaders.images import (
    BITMAP_SUFFIXES,
    DICOM_SUFFIXES,
    check_image,
    choose_frontal,
    view_position,
)
from echo.data.loaders.sections import report_from_fields
from echo.data.preprocess import ImageReadError
from echo.errors import UserError

METADATA_FILES = ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz")


def _files_dir(root: Path) -> Path:
    if root.name == "files" and root.is_dir():
        return root
    if (root / "files").is_dir():
        return root / "files"
    raise UserError(f"{root}: not a MIMIC-CXR folder (no files/pXX/pXXXXXXXX/sXXXXXXXX layout)")


def _metadata_views(root: Path, report: LoadReport) -> dict[str, str]:
    """dicom_id -> ViewPosition from the JPG release's metadata file, if there is one."""
    for name in METADATA_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            raw = path.read_bytes()
            text = gzip.decompress(raw).decode("utf-8") if name.endswith(".gz") else raw.decode("utf-8")
            return {
                row["dicom_id"]: (row.get("ViewPosition") or "").upper()
                for row in csv.DictReader(io.StringIO(text))
                if row.get("dicom_id")
            }
        except (OSError, UnicodeDecodeError, EOFError, KeyError, gzip.BadGzipFile, csv.Error) as error:
            report.bad_file(name, f"cannot read metadata ({error})")
    return {}


def _studies(files: Path) -> list[tuple[str, Path]]:
    """(study name, patient folder) for every study folder or report file, sorted."""
    found: set[tuple[str, Path]] = set()
    for patient in files.glob("p*/p*"):
        if not patient.is_dir():
            continue
        for entry in patient.glob("s*"):
            name = entry.stem if entry.suffix == ".txt" else entry.name
            if entry.is_dir() or entry.suffix == ".txt":
                found.add((name, patient))
    return sorted(found, key=lambda item: (str(item[1]), item[0]))


def load_mimic_cxr(root: str | Path, verify_images: bool = False, show_progress: bool = False) -> LoadResult:
    root = Path(root)
    files = _files_dir(root)
    report = LoadReport(source=str(files))
    views_by_id = _metadata_views(files.parent, report)
    examples: list[Example] = []
    studies: Any = _studies(files)
    if show_progress:
        from rich.progress import track

        studies = track(studies, description="reading MIMIC-CXR studies")
    for name, patient in studies:
        where = f"{patient.name}/{name}"
        report.total += 1
        text_path, image_dir = patient / f"{name}.txt", patient / name
        if not text_path.is_file():
            report.skip(where, "no report file")
            continue
        if not image_dir.is_dir():
            report.skip(where, "no image folder")
            continue
        try:
            text = report_from_fields(report=text_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            report.skip(where, f"cannot read report ({error})")
            continue
        except ValueError as error:
            report.skip(where, str(error))
            continue
        paths, views = [], []
        for path in sorted(image_dir.iterdir()):
            if path.suffix.lower() not in DICOM_SUFFIXES | BITMAP_SUFFIXES:
                continue
            try:
                check_image(path, verify_images)
                view = views_by_id.get(path.stem) or view_position(path)
            except ImageReadError as error:
                report.bad_file(f"{where}/{path.name}", str(error).split(": ", 1)[-1])
                continue
            paths.append(path)
            views.append(view)
        if not paths:
            report.skip(where, "no readable image")
            continue
        examples.append(
            Example.make(name, tuple(paths), choose_frontal(paths, views), text.findings, text.impression)
        )
        report.loaded += 1
    return LoadResult(examples, report)
