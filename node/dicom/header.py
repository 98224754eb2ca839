"""An instance's header as the node keeps it: identifiers checked, pixel data checked for a cut file.

`read_header` decodes a Part 10 stream held in memory; `read_header_file` reads a file the SCP
streamed to disk once, up to its pixel data. Both raise `HeaderError` with the outcome the sender is
answered with.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import DeflatedExplicitVRLittleEndian

from node.dicom.chest import ImageFacts, facts_from_dataset, text_value
from node.dicom.outcome import IngestOutcome

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes the node keeps from a data set."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    issuer_of_patient_id: str | None
    modality: str | None
    body_part: str | None
    view_position: str | None
    facts: ImageFacts = field(default_factory=ImageFacts)  # anatomy and view, as assembly reads them
    transfer_syntax_uid: str | None = None  # of the file meta: how the file on disk is encoded


class HeaderError(ValueError):
    def __init__(self, outcome: IngestOutcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


# keyword -> longest value the standard allows for its VR (and the column holds)
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_OPTIONAL_TEXT = {
    "AccessionNumber": 16,
    "PatientID": 64,
    "Modality": 16,
    "BodyPartExamined": 16,
    "ViewPosition": 16,
}
_UNCHECKED_TEXT = ("IssuerOfPatientID",)  # kept as sent: the frozen identity and the ORU deal with its length


def _native_pixel_data_short(dataset: Dataset) -> bool:
    """True if uncompressed Pixel Data holds fewer bytes than Rows x Columns x ... require (a cut file).

    pydicom reads a truncated last element without complaint; a chest image is exactly that element.
    Raises (AttributeError) when the Image Pixel module that describes the pixels is missing.
    """
    if "PixelData" not in dataset or dataset.file_meta.TransferSyntaxUID.is_compressed:
        return False
    return len(dataset.PixelData) < get_expected_length(dataset, unit="bytes")


def read_header(encoded: bytes) -> InstanceHeader:
    """Decode `encoded` (a Part 10 stream) and pull out what the node keeps; raises `HeaderError`."""
    try:
        dataset = dcmread(BytesIO(encoded))
        short_pixels = _native_pixel_data_short(dataset)
    except Exception as error:  # pydicom raises many types for damaged input; all mean "cannot decode"
        raise _cannot_decode(error) from None
    return _header_of(dataset, short_pixels)


def read_header_file(path: Path) -> InstanceHeader:
    """`read_header` for a Part 10 file (a data set the SCP streamed to disk) without reading its pixel
    data into memory: the data set is read up to Pixel Data, and the Pixel Data element's length is
    checked against the Image Pixel module and the bytes the file holds. Raises `HeaderError`.
    """
    try:
        with path.open("rb") as handle:
            dataset = dcmread(handle, stop_before_pixels=True)
            deflated = dataset.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
            pixels_at = handle.tell()  # in the inflated stream when deflated: not a file offset
            element = b"" if deflated else handle.read(12)
        short_pixels = not deflated and _pixel_element_short(
            dataset, element, path.stat().st_size - pixels_at
        )
    except Exception as error:  # pydicom raises many types for damaged input; all mean "cannot decode"
        raise _cannot_decode(error) from None
    if deflated:  # rare, and compressed: read it whole
        return read_header(path.read_bytes())
    return _header_of(dataset, short_pixels)


def _cannot_decode(error: Exception) -> HeaderError:
    return HeaderError(IngestOutcome.CANNOT_DECODE, f"cannot decode data set ({type(error).__name__})")


def _header_of(dataset: Dataset, short_pixels: bool) -> InstanceHeader:
    """What the node keeps from a decoded data set (pixel data not needed); raises `HeaderError`."""
    try:
        uids = {keyword: text_value(dataset, keyword, strict=True) for keyword in _REQUIRED_UIDS}
        texts = {
            keyword: text_value(dataset, keyword, strict=True)
            for keyword in (*_OPTIONAL_TEXT, *_UNCHECKED_TEXT)
        }
        facts = facts_from_dataset(dataset)
        syntax = str(dataset.file_meta.TransferSyntaxUID)
    except Exception as error:  # a value pydicom cannot convert: "cannot decode" as well
        raise _cannot_decode(error) from None
    if short_pixels:
        raise HeaderError(IngestOutcome.CANNOT_DECODE, "pixel data shorter than its Image Pixel module says")
    for keyword, value in uids.items():
        if value is None:
            raise HeaderError(IngestOutcome.MISSING_ATTRIBUTE, f"{keyword} is missing")
        if len(value) > 64 or not _UID.match(value):
            raise HeaderError(IngestOutcome.INVALID_ATTRIBUTE, f"{keyword} is not a valid UID")
    for keyword, limit in _OPTIONAL_TEXT.items():
        value = texts[keyword]
        if value is not None and len(value) > limit:
            raise HeaderError(IngestOutcome.INVALID_ATTRIBUTE, f"{keyword} is longer than {limit} characters")
    return InstanceHeader(
        sop_class_uid=str(uids["SOPClassUID"]),
        sop_instance_uid=str(uids["SOPInstanceUID"]),
        study_instance_uid=str(uids["StudyInstanceUID"]),
        series_instance_uid=str(uids["SeriesInstanceUID"]),
        accession_number=texts["AccessionNumber"],
        patient_id=texts["PatientID"],
        issuer_of_patient_id=texts["IssuerOfPatientID"],
        modality=texts["Modality"].upper() if texts["Modality"] else None,
        body_part=texts["BodyPartExamined"].upper() if texts["BodyPartExamined"] else None,
        view_position=texts["ViewPosition"],
        facts=facts,
        transfer_syntax_uid=syntax,
    )


def _pixel_element_short(dataset: Dataset, element: bytes, bytes_left: int) -> bool:
    """`_native_pixel_data_short` from the Pixel Data element's header (`element`, its first 12 bytes)
    and the `bytes_left` in the file from where it starts."""
    syntax = dataset.file_meta.TransferSyntaxUID
    if len(element) < 8 or syntax.is_compressed:
        return False
    order = "<" if syntax.is_little_endian else ">"
    if struct.unpack(f"{order}HH", element[:4]) != (0x7FE0, 0x0010):
        return False
    if syntax.is_implicit_VR:
        (declared,), header_length = struct.unpack(f"{order}L", element[4:8]), 8
    elif len(element) == 12 and element[4:6] in (b"OB", b"OW", b"UN", b"OD", b"OF", b"OL", b"OV"):
        (declared,), header_length = struct.unpack(f"{order}L", element[8:12]), 12
    else:
        return False
    if declared == 0xFFFFFFFF:  # undefined length: encapsulated fragments
        return False
    held = min(declared, bytes_left - header_length)
    return held < get_expected_length(dataset, unit="bytes")
