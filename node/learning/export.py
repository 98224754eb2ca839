"""`echo-admin dataset export`: the site's signed studies as a de-identified training set for echo-train.

A study is exported when it has a current signed report (`signed_reports.replaced_by_id` NULL; the
newest when several count), signed (or, without a signing time, received) in [since, until), and
at least one frontal chest radiograph on the node. "Frontal" is what the node and the worker read it
as: `node.dicom.chest.decide` must find a chest radiograph the worker may draft, and the images
exported are those `node.dicom.chest.view_of` calls frontal (View Position, View Code Sequence,
descriptions, laterality: the worker's ladder); the manifest's `frontal` is the PA one if there is
one, then the lowest Instance Number. Images whose Burned In Annotation is YES are left out (and
counted); a study left without a frontal image is left out.

Each study becomes one row of `manifest.jsonl` (`echo.data.manifest`, which echo-train reads):
the de-identified images under images/<pseudonym>/, the signed findings and impression (identifiers
the header names and numeric dates replaced, `node.learning.deid.scrub_text`), labels and
attributes read from that text by echo's labeler (uncertain counts as negative, as in echo's F1), a
split by patient (HMAC of the patient id under the site secret: the same patient always lands in one
split, and re-exports agree), and the de-identified Study Instance UID and accession number. A
positive finding whose side or lobe the text does not give cannot be a manifest row: such a study
is left out with that reason.

Nothing is written outside --out; nothing identifying is logged.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from rich.progress import Progress
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from echo.data.manifest import MANIFEST_NAME, ManifestRow, write_manifest
from echo.errors import UserError
from echo.findings import ATTRIBUTES, FINDINGS, Label
from echo.metrics import label_attributes, label_report
from echo.report import format_report
from node.config.settings import Settings
from node.dicom.chest import RADIOGRAPH_MODALITIES, View, decide, facts_from_dataset, view_of
from node.learning.bulk_import import Tally
from node.learning.deid import (
    Deidentifier,
    burned_in,
    header_identifiers,
    keyed,
    pseudonym,
    scrub_text,
    site_secret,
)
from node.store.models import Instance, SignedReport, Study
from node.store.retention import is_purged

MARKER = ".echo-dataset-export"  # an --out folder holding it is an earlier export: replaced
README = "README.txt"
IMAGES = "images"
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ExportRequest:
    out: Path
    since: datetime | None = None  # signed on or after
    until: datetime | None = None  # signed before
    val_share: float = 0.1
    test_share: float = 0.1


@dataclass
class ExportSummary:
    considered: int = 0  # studies with a current signed report in the window
    splits: Counter[str] = field(default_factory=Counter)  # studies exported per split
    images: int = 0
    burned_in: int = 0  # frontal images left out for burned-in annotation
    left_out: Tally = field(default_factory=Tally)  # studies, with the reason

    @property
    def exported(self) -> int:
        return sum(self.splits.values())

    def lines(self) -> list[str]:
        per_split = ", ".join(f"{name} {self.splits[name]}" for name in SPLIT_NAMES)
        lines = [
            f"studies with a current signed report: {self.considered}",
            f"exported: {self.exported} studies ({per_split}), {self.images} images",
            f"left out: {self.left_out.count} studies; {self.burned_in} images with burned-in annotation",
        ]
        lines += [f"  {count} {why}" for why, count in self.left_out.reasons.most_common()]
        return lines


@dataclass(frozen=True)
class _Signed:
    study_id: int
    study_uid: str
    accession: str | None
    patient_id: str | None
    findings: str
    impression: str
    paths: tuple[str, ...]


class _LeftOut(Exception):
    """Why a study is not exported (one line, no patient data)."""


def split_of(secret: bytes, patient: str, val_share: float, test_share: float) -> str:
    """The patient's split: a uniform number from the HMAC of the id, cut at the shares."""
    u = int.from_bytes(keyed(secret, "split", patient)[:8], "big") / 2**64
    return "test" if u < test_share else "val" if u < test_share + val_share else "train"


def export_dataset(
    settings: Settings,
    sessions: sessionmaker[Session],
    request: ExportRequest,
    progress: Progress | None = None,
) -> ExportSummary:
    if not (0 <= request.val_share < 1 and 0 <= request.test_share < 1) or (
        request.val_share + request.test_share >= 1
    ):
        raise UserError("--val-share and --test-share must each be in [0, 1) and leave a share for training")
    progress = progress or Progress(disable=True)
    out = _prepare(request.out)
    secret = site_secret(settings.data_dir)
    deidentify = Deidentifier(secret)
    with sessions() as session:
        studies = _signed_studies(session, request.since, request.until)
    summary = ExportSummary(considered=len(studies))
    rows: list[ManifestRow] = []
    task = progress.add_task("exporting studies", total=len(studies))
    for study in studies:
        try:
            rows.append(_export_study(study, secret, deidentify, out, request, summary))
        except _LeftOut as reason:
            summary.left_out.add(f"study {study.study_id}", str(reason))
        progress.advance(task)
    write_manifest(out / MANIFEST_NAME, rows)
    (out / README).write_text(readme(summary, request, deidentify.method), encoding="utf-8")
    return summary


def _prepare(out: Path) -> Path:
    """An empty (or new) folder, or an earlier export, emptied of what that export wrote."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UserError(f"--out {out}: not empty and not an earlier export; give a new or empty folder")
        shutil.rmtree(out / IMAGES, ignore_errors=True)
        for name in (MANIFEST_NAME, README):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        "an ECHO data set export: `echo-admin dataset export` may replace this folder\n"
    )
    return out


def _signed_studies(session: Session, since: datetime | None, until: datetime | None) -> list[_Signed]:
    signed_when = func.coalesce(SignedReport.signed_at, SignedReport.received_at)
    query = (
        select(SignedReport.study_id, SignedReport.findings, SignedReport.impression)
        .where(SignedReport.replaced_by_id.is_(None), SignedReport.study_id.is_not(None))
        .order_by(SignedReport.study_id, SignedReport.id)
    )
    if since is not None:
        query = query.where(signed_when >= since)
    if until is not None:
        query = query.where(signed_when < until)
    newest = {study_id: (findings, impression) for study_id, findings, impression in session.execute(query)}
    found = []
    for study in session.scalars(select(Study).where(Study.id.in_(newest)).order_by(Study.id)):
        paths = session.scalars(
            select(Instance.path).where(Instance.study_id == study.id).order_by(Instance.id)
        )
        findings, impression = newest[study.id]
        found.append(
            _Signed(
                study.id,
                study.study_instance_uid,
                study.accession_number,
                study.patient_id,
                findings,
                impression,
                tuple(paths),
            )
        )
    return found


def _export_study(
    study: _Signed,
    secret: bytes,
    deidentify: Deidentifier,
    out: Path,
    request: ExportRequest,
    summary: ExportSummary,
) -> ManifestRow:
    headers = _headers(study.paths)
    if not headers:
        raise _LeftOut("no image left on the node (purged or unreadable)")
    decision = decide([facts_from_dataset(header) for _, header in headers])
    if not decision.draft:
        raise _LeftOut(f"not a frontal chest radiograph ({decision.reason})")
    frontals = [
        (path, header)
        for path, header in headers
        if str(header.get("Modality") or "").upper() in RADIOGRAPH_MODALITIES
        and view_of(facts_from_dataset(header)) is View.FRONTAL
    ]
    if not frontals:
        raise _LeftOut("no image marked frontal")
    clean = [(path, header) for path, header in frontals if not burned_in(header)]
    summary.burned_in += len(frontals) - len(clean)
    if not clean:
        raise _LeftOut("every frontal image has burned-in annotation")
    clean.sort(key=_reading_order)
    identifiers = [value for _, header in headers for value in header_identifiers(header)]
    identifiers += [value for value in (study.patient_id, study.accession) if value and len(value) >= 3]
    findings, impression = (scrub_text(text, identifiers) for text in (study.findings, study.impression))
    report = format_report(findings, impression)
    labels, attributes = _labels(report)
    name = f"s{pseudonym(secret, 'study', study.study_uid)}"
    images, written = [], []
    for number, (path, _) in enumerate(clean, start=1):
        relative = f"{IMAGES}/{name}/{number}.dcm"
        written.append(_write(deidentify(dcmread(path)), out / relative))
        images.append(relative)
    summary.images += len(images)
    first = written[0]
    row = ManifestRow(
        id=name,
        split=split_of(
            secret, study.patient_id or f"study|{study.study_uid}", request.val_share, request.test_share
        ),
        images=tuple(images),
        frontal=images[0],
        labels=labels,
        attributes=attributes,
        findings=findings,
        impression=impression,
        report=report,
        study_instance_uid=str(first.get("StudyInstanceUID") or ""),
        accession_number=str(first.get("AccessionNumber") or ""),
        view_position=str(clean[0][1].get("ViewPosition") or ""),
    )
    summary.splits[row.split] += 1
    return row


def _headers(paths: tuple[str, ...]) -> list[tuple[Path, Dataset]]:
    found = []
    for path in paths:
        if is_purged(path) or not Path(path).is_file():
            continue
        try:
            found.append((Path(path), dcmread(path, stop_before_pixels=True)))
        except Exception:  # a damaged file is not exported; the study may have others
            continue
    return found


def _reading_order(item: tuple[Path, Dataset]) -> tuple[int, int, str]:
    """PA before AP (the better exposure), then the lowest Instance Number."""
    path, header = item
    position = str(header.get("ViewPosition") or "").upper()
    try:
        number = int(header.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    return (0 if position == "PA" else 1, number, str(path))


def _labels(report: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Every finding class positive or negative (uncertain counts as negative), and the side or lobe
    of each positive one that has one; _LeftOut when the text does not give it."""
    read = label_report(report)
    labels = {
        name: str(Label.POSITIVE if read.get(name) is Label.POSITIVE else Label.NEGATIVE) for name in FINDINGS
    }
    attributes = {
        name: value for name, value in label_attributes(report).items() if labels[name] == Label.POSITIVE
    }
    for name, allowed in ATTRIBUTES.items():
        if labels[name] == Label.POSITIVE and name not in attributes:
            raise _LeftOut(f"{name} named without the {'/'.join(allowed)} a manifest row needs")
    return labels, attributes


def _write(dataset: Dataset, path: Path) -> Dataset:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    dataset.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
    return dataset


def readme(summary: ExportSummary, request: ExportRequest, method: str) -> str:
    window = (
        f"signed on or after {request.since:%Y-%m-%d}" if request.since else "signed at any time",
        f"before {request.until:%Y-%m-%d}" if request.until else "up to now",
    )
    return "\n".join(
        [
            "ECHO node: de-identified data set export",
            "",
            f"Written by `echo-admin dataset export` at {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
            f"Selection: studies with a current signed report, {', '.join(window)} (UTC), with a frontal",
            "chest radiograph on the node (the views the node's worker reads as frontal).",
            "",
            *summary.lines(),
            "",
            "Layout: manifest.jsonl (one JSON object per study: id, split, images, frontal, labels,",
            "attributes, findings, impression, report, study_instance_uid, accession_number, view_position;",
            "the format echo-train reads) and images/<study>/<n>.dcm, paths relative to this folder.",
            "Train with e.g. `echo-train dcd --data manifest.jsonl ...` (see docs/site-data.md).",
            "",
            f"Splits: by patient, val {request.val_share:g}, test {request.test_share:g}, the rest train. The",
            "split is taken from an HMAC-SHA256 of the patient id keyed by the node's site secret",
            "(<ECHO_DATA_DIR>/site-secret, never exported): a patient is never in two splits, and every",
            "export from this node agrees. Study ids are pseudonyms under the same key.",
            "",
            f"De-identification ({method}): DICOM PS3.15 Annex E Basic Application Level",
            "Confidentiality Profile with the Retain Longitudinal Temporal Information with Modified Dates",
            "Option: private attributes, overlays and curves, descriptions, comments, names, addresses,",
            "other ids removed; birth date and sex emptied; UIDs, names and ids replaced by stable",
            "pseudonyms; dates shifted back by one secret offset. Pixel data unchanged. Images marked",
            "Burned In Annotation YES are not here; images without that attribute are, their pixels not",
            "checked for text. Report text: the patient's ids, accession and name as the header spells",
            "them, and numeric dates, replaced; the rest is as signed: read it before it leaves the site.",
            "",
            "Labels: read from the report text by echo's rule-based labeler (uncertain counts as",
            "negative); a study with a positive finding whose side or lobe the text does not give is left out.",
            "",
        ]
    )
