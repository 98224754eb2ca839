"""`manifest.jsonl`: one JSON object per study, the contract between data, training and evaluation.

Fields: id, split, images (every DICOM file of the study), frontal (the image the model reads),
labels (every class of FINDINGS, "positive" | "negative"), attributes (side / lobe of positive
findings, per ATTRIBUTES), findings, impression, report (= format_report(findings, impression)),
study_instance_uid, accession_number, view_position, and for a site-shifted set (`make-synthetic
--site`) site: the site's name (absent otherwise). Paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from echo.data.site import SITE_NAME
from echo.errors import UserError
from echo.findings import ATTRIBUTES, FINDINGS, Label
from echo.report import format_report

MANIFEST_NAME = "manifest.jsonl"
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_STREAM = 0x5B117  # keeps the split independent of every other per-study random stream


class ManifestError(UserError):
    """A manifest file that does not follow the contract (the message names the line)."""


def assign_split(seed: int, index: int) -> str:
    """About 80/10/10 train/val/test, decided by (seed, index) alone."""
    u = np.random.default_rng([seed, index, _SPLIT_STREAM]).random()
    return "train" if u < 0.8 else "val" if u < 0.9 else "test"


@dataclass(frozen=True)
class ManifestRow:
    id: str
    split: str
    images: tuple[str, ...]
    frontal: str
    labels: dict[str, str]
    attributes: dict[str, dict[str, str]]
    findings: str
    impression: str
    report: str
    study_instance_uid: str
    accession_number: str
    view_position: str
    site: str | None = None  # the site a shifted synthetic set imitates; None: the default look

    def __post_init__(self) -> None:
        _validate(self)

    def image_path(self, root: str | Path) -> Path:
        """The frontal image, resolved against the manifest's folder."""
        return Path(root) / self.frontal

    def image_paths(self, root: str | Path) -> tuple[Path, ...]:
        return tuple(Path(root) / image for image in self.images)

    @property
    def positives(self) -> tuple[str, ...]:
        return tuple(name for name in FINDINGS if self.labels[name] == Label.POSITIVE)

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["images"] = list(self.images)
        if self.site is None:
            del row["site"]  # default sets stay byte-for-byte what they were before sites existed
        return row


def _validate(row: ManifestRow) -> None:
    if not row.id:
        raise ValueError("id must not be empty")
    if row.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {row.split!r}")
    if not row.images or row.frontal not in row.images:
        raise ValueError(f"frontal {row.frontal!r} must be one of images {list(row.images)}")
    if any(Path(image).is_absolute() for image in row.images):
        raise ValueError("image paths must be relative to the manifest's folder")
    if set(row.labels) != set(FINDINGS):
        missing, extra = sorted(set(FINDINGS) - set(row.labels)), sorted(set(row.labels) - set(FINDINGS))
        raise ValueError(
            f"labels must cover exactly the finding classes (missing {missing}, unknown {extra})"
        )
    bad = {name: value for name, value in row.labels.items() if value not in (Label.POSITIVE, Label.NEGATIVE)}
    if bad:
        raise ValueError(f"labels must be 'positive' or 'negative', got {bad}")
    for name, values in row.attributes.items():
        if name not in ATTRIBUTES or row.labels.get(name) != Label.POSITIVE:
            raise ValueError(
                f"attributes given for {name!r}, which is not a positive finding with attributes"
            )
        for key, value in values.items():
            allowed = ATTRIBUTES[name].get(key)
            if allowed is None or value not in allowed:
                raise ValueError(f"attribute {name}.{key}={value!r} is not one of {allowed}")
    for name in ATTRIBUTES:
        if row.labels[name] == Label.POSITIVE and set(row.attributes.get(name, {})) != set(ATTRIBUTES[name]):
            raise ValueError(f"positive {name!r} needs attributes {sorted(ATTRIBUTES[name])}")
    if row.report != format_report(row.findings, row.impression):
        raise ValueError("report must equal format_report(findings, impression)")
    if row.site is not None and not (isinstance(row.site, str) and SITE_NAME.fullmatch(row.site)):
        raise ValueError(f"site must be a site name (lower-case letters, digits, '-'), got {row.site!r}")


_FIELDS = tuple(field.name for field in fields(ManifestRow))
_OPTIONAL = frozenset({"site"})


def row_from_json(data: Mapping[str, Any]) -> ManifestRow:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    missing = [name for name in _FIELDS if name not in data and name not in _OPTIONAL]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    values = {name: data[name] for name in _FIELDS if name in data}
    if not isinstance(values["images"], list) or not all(
        isinstance(image, str) for image in values["images"]
    ):
        raise ValueError("images must be a list of paths")
    if not isinstance(values["labels"], dict) or not isinstance(values["attributes"], dict):
        raise ValueError("labels and attributes must be JSON objects")
    values["images"] = tuple(values["images"])
    return ManifestRow(**values)


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Every row of a manifest; the first bad line stops reading with a one-line error naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot read manifest ({error})") from None
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = row_from_json(json.loads(line))
        except json.JSONDecodeError as error:
            raise ManifestError(f"{path} line {number}: not valid JSON ({error.msg})") from None
        except (TypeError, ValueError) as error:
            raise ManifestError(f"{path} line {number}: {error}") from None
        if row.id in seen:
            raise ManifestError(f"{path} line {number}: duplicate id {row.id!r}")
        seen.add(row.id)
        rows.append(row)
    return rows


def write_manifest(path: str | Path, rows: Iterable[ManifestRow]) -> Path:
    """Write atomically (temporary file, then rename): readers never see half a manifest."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
    os.replace(partial, path)
    return path
