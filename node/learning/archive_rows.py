"""The reports file of an archive import: CSV or JSONL rows of accession + report text.

Columns (names matched case-insensitively, spaces and hyphens as underscores, with the usual
aliases): `accession` and/or `study_uid` say which order; `report` (free text with FINDINGS: /
IMPRESSION: headers) or `findings` and/or `impression` give the text; `signed_at` (ISO 8601; a time
without a zone is taken as UTC) is optional. The sections are read by echo's own loader rules
(`echo.data.loaders.sections`), so a row imports here exactly when `echo-train` could read it.

A file that cannot be read, or a CSV whose header names no order or text column, is a `UserError`
before anything is stored; a bad row is kept with its `problem` and refused alone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from echo.data.loaders.sections import report_from_fields
from echo.errors import UserError
from echo.report import format_report
from node.learning.signed import SignedReportIn
from node.store.states import SignedSource

_ALIASES = {
    "accession": "accession",
    "accession_number": "accession",
    "accessionnumber": "accession",
    "acc": "accession",
    "study_uid": "study_uid",
    "study_instance_uid": "study_uid",
    "studyinstanceuid": "study_uid",
    "report": "report",
    "report_text": "report",
    "text": "report",
    "findings": "findings",
    "impression": "impression",
    "signed_at": "signed_at",
    "signed": "signed_at",
    "signed_date": "signed_at",
}
_ORDER_COLUMNS = ("accession", "study_uid")
_TEXT_COLUMNS = ("report", "findings", "impression")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_ACCESSION = 16  # SH, and studies.accession_number


@dataclass(frozen=True)
class ArchiveRow:
    where: str  # "reports.csv line 12": for the summary, never the row's values
    values: dict[str, Any]  # canonical column -> value
    problem: str | None = None  # why the row cannot be read at all


def _canonical(name: str) -> str:
    normal = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return _ALIASES.get(normal, _ALIASES.get(normal.replace("_", ""), normal))


def read_rows(path: Path) -> list[ArchiveRow]:
    """Every data row of a .csv or .jsonl reports file."""
    if not path.is_file():
        raise UserError(f"{path}: no such reports file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise UserError(f"{path}: the reports file must be .csv or .jsonl")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the reports file ({error})") from None
    return _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text)


def _csv_rows(path: Path, text: str) -> list[ArchiveRow]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted multi-line reports stay whole
    columns = {_canonical(name) for name in reader.fieldnames or []}
    if not columns & set(_ORDER_COLUMNS) or not columns & set(_TEXT_COLUMNS):
        raise UserError(
            f"{path}: needs an order column ({', '.join(_ORDER_COLUMNS)}) and a text column "
            f"({', '.join(_TEXT_COLUMNS)}); found {', '.join(reader.fieldnames or []) or 'no header'}"
        )
    rows = []
    ended = reader.line_num  # the header's last line
    try:
        for row in reader:
            where = f"{path.name} line {ended + 1}"  # where the record starts (a report may span lines)
            ended = reader.line_num
            if None in row:  # more fields than the header has
                rows.append(ArchiveRow(where, {}, "more fields than the header names"))
                continue
            rows.append(ArchiveRow(where, {_canonical(key): value for key, value in row.items()}))
    except csv.Error as error:
        raise UserError(f"{path} line {reader.line_num}: malformed CSV ({error})") from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[ArchiveRow]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            rows.append(ArchiveRow(where, {}, f"not valid JSON ({error.msg})"))
            continue
        if not isinstance(data, dict):
            rows.append(ArchiveRow(where, {}, "not a JSON object"))
            continue
        rows.append(ArchiveRow(where, {_canonical(str(key)): value for key, value in data.items()}))
    return rows


def _text(values: dict[str, Any], column: str) -> str | None:
    value = values.get(column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{column} must be text")
    return str(value).strip() or None


def _signed_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("signed_at is not an ISO 8601 date or time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def message_key(order: str, text: str) -> str:
    """import|<accession or study UID>|<sha256 of the text>[:16]: the same row again is the same key."""
    return f"import|{order}|{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def signed_from_row(values: dict[str, Any]) -> SignedReportIn:
    """The signed report a row holds; ValueError says why there is none (never quoting its values)."""
    accession = _text(values, "accession")
    study_uid = _text(values, "study_uid")
    if not accession and not study_uid:
        raise ValueError("no accession or study_uid")
    if accession and len(accession) > MAX_ACCESSION:
        raise ValueError(f"accession longer than {MAX_ACCESSION} characters")
    if study_uid and (len(study_uid) > 64 or not _UID.match(study_uid)):
        raise ValueError("study_uid is not a valid UID")
    for column in _TEXT_COLUMNS:
        _text(values, column)  # the type check, with the column's name
    sections = report_from_fields(values.get("findings"), values.get("impression"), values.get("report"))
    text = _text(values, "report") or format_report(sections.findings, sections.impression)
    signed_at = _signed_at(_text(values, "signed_at"))
    return SignedReportIn(
        source=SignedSource.IMPORT,
        message_key=message_key(accession or str(study_uid), text),
        message_type="import",
        findings=sections.findings,
        impression=sections.impression,
        text=text,
        accession_number=accession,
        study_instance_uid=study_uid,
        signed_at=signed_at,
        raw=json.dumps(values, ensure_ascii=False, default=str),
        parsed={
            "findings": sections.findings,
            "impression": sections.impression,
            "signed_at": signed_at.isoformat() if signed_at else None,
        },
    )
