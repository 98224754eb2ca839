"""Which image of a study the model reads: the frontal view, chosen by the strongest evidence there is.

The model was trained on frontal (PA/AP) chest radiographs; a lateral read as if it were frontal
gives a confidently wrong draft. Evidence, strongest first:

1. View Position (0018,5101): PA or AP is frontal; LL, RL or LATERAL is lateral.
2. View Code Sequence (0054,0220): the coded view (SNOMED CT, or the older SRT codes).
3. Series Description / Protocol Name words: "PA", "AP", "FRONTAL" against "LAT", "LATERAL".
4. Image Laterality (0020,0062): B (both sides) suggests frontal, L or R a lateral projection.

Among equals: PA before AP (the better exposure), Body Part Examined CHEST first, then the
lowest Instance Number. When nothing marks any image frontal, an image without view information
is taken, else a lateral, and the reason says so: `pick_frontal` never refuses a study with images.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from pydicom import Dataset

_FRONTAL_POSITIONS = {"PA": "PA", "AP": "AP"}
_LATERAL_POSITIONS = {"LL", "RL", "LATERAL", "LAT"}
# Code value -> PA, AP or LATERAL (SNOMED CT and the SRT codes of CID 4010 "DX View").
_VIEW_CODES = {
    "399348003": "PA",
    "R-10214": "PA",
    "399214001": "AP",
    "R-10206": "AP",
    "399067008": "LATERAL",
    "399173006": "LATERAL",
    "399198007": "LATERAL",
    "R-102CD": "LATERAL",
    "R-10232": "LATERAL",
    "R-10236": "LATERAL",
}
_FRONTAL_WORDS = re.compile(r"\b(PA|AP|P-A|A-P|FRONTAL|POSTEROANTERIOR|ANTEROPOSTERIOR)\b", re.IGNORECASE)
_LATERAL_WORDS = re.compile(r"\b(LAT|LATERAL|LL|RL)\b", re.IGNORECASE)


class View(IntEnum):
    """What an image shows, in order of preference (lower is better)."""

    FRONTAL = 0
    UNKNOWN = 1
    LATERAL = 2


class Evidence(IntEnum):
    """Where the view came from, strongest first."""

    VIEW_POSITION = 0
    VIEW_CODE = 1
    DESCRIPTION = 2
    LATERALITY = 3
    NONE = 4


@dataclass(frozen=True)
class ViewCandidate:
    """The header attributes of one image that say which view it is."""

    instance_id: int
    sop_instance_uid: str
    view_position: str | None = None
    view_codes: tuple[str, ...] = ()
    series_description: str | None = None
    protocol_name: str | None = None
    image_laterality: str | None = None
    body_part: str | None = None
    instance_number: int | None = None


@dataclass(frozen=True)
class ViewPick:
    candidate: ViewCandidate
    reason: str  # one line for the report row and the log; no patient data
    fallback: bool  # True when nothing marked the chosen image frontal


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    return str(value).strip() or None


def candidate_from_dataset(instance_id: int, dataset: Dataset) -> ViewCandidate:
    """Read the view evidence from an image header (pixel data not needed)."""
    codes = tuple(
        str(item.get("CodeValue", "")).strip()
        for item in dataset.get("ViewCodeSequence") or []
        if item.get("CodeValue")
    )
    number = dataset.get("InstanceNumber")
    try:
        instance_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        instance_number = None
    return ViewCandidate(
        instance_id=instance_id,
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        view_position=_text(dataset, "ViewPosition"),
        view_codes=codes,
        series_description=_text(dataset, "SeriesDescription"),
        protocol_name=_text(dataset, "ProtocolName"),
        image_laterality=_text(dataset, "ImageLaterality"),
        body_part=_text(dataset, "BodyPartExamined"),
        instance_number=instance_number,
    )


@dataclass(frozen=True)
class _Reading:
    view: View
    evidence: Evidence
    projection: str | None  # PA or AP when known
    why: str


def _read_view(image: ViewCandidate) -> _Reading:
    position = (image.view_position or "").upper()
    if position in _FRONTAL_POSITIONS:
        return _Reading(View.FRONTAL, Evidence.VIEW_POSITION, position, f"View Position {position}")
    if position in _LATERAL_POSITIONS:
        return _Reading(View.LATERAL, Evidence.VIEW_POSITION, None, f"View Position {position}")
    coded = [_VIEW_CODES[code] for code in image.view_codes if code in _VIEW_CODES]
    if coded:
        view = coded[0]
        if view == "LATERAL":
            return _Reading(View.LATERAL, Evidence.VIEW_CODE, None, "View Code Sequence says lateral")
        return _Reading(View.FRONTAL, Evidence.VIEW_CODE, view, f"View Code Sequence says {view}")
    for keyword, text in (
        ("Series Description", image.series_description),
        ("Protocol Name", image.protocol_name),
    ):
        if not text:
            continue
        frontal, lateral = _FRONTAL_WORDS.search(text), _LATERAL_WORDS.search(text)
        if frontal and not lateral:
            word = frontal.group(1).upper().replace("-", "")
            projection = word if word in _FRONTAL_POSITIONS else None
            return _Reading(
                View.FRONTAL, Evidence.DESCRIPTION, projection, f"{keyword} {text!r} names a frontal view"
            )
        if lateral and not frontal:
            return _Reading(
                View.LATERAL, Evidence.DESCRIPTION, None, f"{keyword} {text!r} names a lateral view"
            )
    laterality = (image.image_laterality or "").upper()
    if laterality == "B":
        return _Reading(View.FRONTAL, Evidence.LATERALITY, None, "Image Laterality B (both sides)")
    if laterality in {"L", "R"}:
        return _Reading(View.LATERAL, Evidence.LATERALITY, None, f"Image Laterality {laterality} (one side)")
    return _Reading(View.UNKNOWN, Evidence.NONE, None, "no view information")


def _is_chest(image: ViewCandidate) -> bool:
    return (image.body_part or "").upper() == "CHEST"


def pick_frontal(images: Sequence[ViewCandidate]) -> ViewPick:
    """The image to report on, and why; raises ValueError only for an empty study."""
    if not images:
        raise ValueError("the study has no readable image to choose from")
    readings = {image.instance_id: _read_view(image) for image in images}

    def preference(image: ViewCandidate) -> tuple[int, int, int, int, int, str]:
        reading = readings[image.instance_id]
        return (
            reading.view,
            reading.evidence,
            0 if reading.projection == "PA" else 1,
            0 if _is_chest(image) else 1,
            image.instance_number if image.instance_number is not None else 1 << 30,
            image.sop_instance_uid,
        )

    chosen = min(images, key=preference)
    reading = readings[chosen.instance_id]
    where = f"instance {chosen.instance_number}" if chosen.instance_number is not None else "the image"
    if reading.view is View.FRONTAL:
        return ViewPick(chosen, f"{where}: {reading.why}", fallback=False)
    if reading.view is View.UNKNOWN:
        body = " (Body Part CHEST)" if _is_chest(chosen) else ""
        return ViewPick(
            chosen,
            f"fallback: no image is marked frontal; {where} has no view information{body}",
            fallback=True,
        )
    return ViewPick(
        chosen, f"fallback: only lateral views in the study; {where} ({reading.why})", fallback=True
    )
