"""Who a draft is about, frozen when it is drafted: the SR and the ORU are built from this, never from
the spool as it is at send time.

A PACS may re-send an instance (same SOP Instance UID) under another study and patient while a
draft of the first study waits in the outbox. Built from the spool file at send time, that draft
would go out under the second patient. So inference freezes the source image's header (patient,
study, order and the image's own UIDs: no pixels, no private or binary elements) into the report
row, and the outbox builds both messages from that copy. Before sending, it reads the spool file
again when it is still there: if the file now names another patient, order or study, the delivery
is held for an operator instead of sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.tag import Tag

IDENTITY_FORMAT = 1

# What the messages need from the source image: SOP Common, Patient, General Study, Patient Study,
# General Series (groups 0008, 0010, 0020, 0032 and 0040 hold them), and the view (0018).
_KEPT_GROUPS = frozenset({0x0008, 0x0010, 0x0018, 0x0020, 0x0032, 0x0040})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

# The attributes that decide whose report it is: any change between drafting and sending holds it.
IDENTITY_KEYWORDS = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


class IdentityError(ValueError):
    """A frozen identity is missing or unreadable; the message is one line for the operator."""


def _kept(element: Any) -> bool:
    tag = Tag(element.tag)
    return tag.group in _KEPT_GROUPS and not tag.is_private and element.VR not in _BINARY_VRS


def _serialisable(element: Any) -> bool:
    single = Dataset()
    single.add(element)
    try:
        single.to_json_dict()
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _key(header: Dataset) -> dict[str, str]:
    return {keyword: str(header.get(keyword) or "").strip() for keyword in IDENTITY_KEYWORDS}


def freeze_identity(header: Dataset) -> dict[str, Any]:
    """The JSON-ready snapshot stored in reports.identity, taken from the image the draft was read from."""
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not header.get(keyword):
            raise IdentityError(f"the source image has no {keyword}: its identity cannot be frozen")
    kept, dropped = Dataset(), []
    for tag in list(header.keys()):
        try:
            element = header[tag]
        except (ValueError, TypeError, OverflowError):  # a value pydicom cannot even read
            dropped.append(str(Tag(tag)))
            continue
        if not _kept(element):
            continue
        if _serialisable(element):
            kept.add(element)
        else:  # a malformed value (a DS of "heavy"): the messages repair or omit it anyway
            dropped.append(element.keyword or str(Tag(tag)))
    return {"format": IDENTITY_FORMAT, "key": _key(header), "header": kept.to_json_dict(), "dropped": dropped}


def thawed_header(identity: dict[str, Any] | None) -> Dataset:
    """The frozen header as a dataset the builders take (the SR's evidence, the ORU's patient and order)."""
    if not identity:
        raise IdentityError("the report has no frozen identity (drafted before identities were frozen)")
    if identity.get("format") != IDENTITY_FORMAT or not isinstance(identity.get("header"), dict):
        raise IdentityError(f"the report's frozen identity has an unknown format {identity.get('format')!r}")
    try:
        return Dataset.from_json(identity["header"])
    except (TypeError, ValueError, KeyError) as error:
        raise IdentityError(f"the report's frozen identity cannot be read: {error}") from None


@dataclass(frozen=True)
class Disagreement:
    attributes: tuple[str, ...]  # keywords only: never the values (they are identifiers)

    def __str__(self) -> str:
        return (
            "the spool's copy of the source image now names another "
            f"{', '.join(self.attributes)} than the draft was written for; held for an operator"
        )


def compare_with_spool(identity: dict[str, Any], current: Dataset) -> Disagreement | None:
    """None when the spool file still names the same patient, order, study and image as the draft."""
    frozen = identity.get("key") or {}
    now = _key(current)
    changed = tuple(keyword for keyword in IDENTITY_KEYWORDS if frozen.get(keyword, "") != now[keyword])
    return Disagreement(changed) if changed else None
