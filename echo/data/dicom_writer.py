"""Encode a synthetic radiograph as a real DICOM CR or DX (For Presentation) instance.

The display image (bright = dense, [0, 1]) is stored in 12-16 bits, inverted for MONOCHROME1,
with a Modality LUT (rescale slope, intercept and type "US") where the case asks for one (always
for DX), a window that frames the body, and for some images a VOI LUT Sequence (a sigmoid curve)
as well. JPEG 2000 lossless encoding goes through pydicom's encoder plugins (pylibjpeg-openjpeg).
Files are written atomically (temporary name, then rename) so an interrupted run never leaves a
half-written instance under its final name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
)

from echo.data.case import Acquisition, Case
from echo.data.identifiers import StudyIdentifiers

DETECTOR_MM = 430.0  # physical height of the (virtual) detector
IMPLEMENTATION_VERSION = "ECHO_SYNTH_1"


@dataclass(frozen=True)
class ImageRole:
    view: str  # "PA" | "AP" | "LL"
    instance_number: int
    sop_instance_uid: str


def _stored_values(
    display: np.ndarray, acquisition: Acquisition, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """(stored uint16 array, window centre, window width) in stored-value units."""
    maxval = 2**acquisition.bits_stored - 1
    floor = float(rng.uniform(0.02, 0.08)) * maxval
    span = float(rng.uniform(0.78, 0.9)) * maxval
    presentation = np.rint(floor + display * span)
    sample = display[::2, ::2]  # a quarter of the pixels pins the percentiles as well, four times faster
    body = sample[sample > 0.15]
    low, high = np.percentile(body if body.size else sample, [0.5, 99.8])
    center = floor + span * (low + high) / 2
    width = span * (high - low) * float(rng.uniform(1.0, 1.12)) + 1
    if acquisition.photometric == "MONOCHROME1":
        presentation = maxval - presentation
        center = maxval - center
    return presentation.astype(np.uint16), float(center), float(width)


def _voi_lut(bits_stored: int, center: float, width: float, inverse: bool) -> Dataset:
    """A sigmoid VOI LUT over every stored value (16-bit output), as DX modalities often send."""
    entries = 2**bits_stored
    x = np.arange(entries, dtype=np.float64)
    curve = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    item = Dataset()
    item.LUTDescriptor = [entries if entries < 65536 else 0, 0, 16]
    item.LUTExplanation = "SIGMOID PRESENTATION CURVE" + (" MONOCHROME1" if inverse else "")
    item.LUTData = np.rint(curve * 65535).astype(np.uint16).tobytes()
    item["LUTData"].VR = "OW"
    return item


def _coded(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_dataset(
    display: np.ndarray,
    case: Case,
    ids: StudyIdentifiers,
    role: ImageRole,
    rng: np.random.Generator,
    *,
    burned_in: bool = False,
    institution: str = "ECHO SYNTHETIC",
) -> Dataset:
    """One image instance; pixel encoding (and JPEG 2000 compression) as the case's acquisition says.

    `burned_in`: the pixels carry burned-in text (a site's overlays), said in BurnedInAnnotation.
    """
    acquisition = case.acquisition
    dx = acquisition.modality == "DX"
    sop_class = DigitalXRayImageStorageForPresentation if dx else ComputedRadiographyImageStorage
    rows, columns = display.shape
    stored, center, width = _stored_values(display, acquisition, rng)
    slope, intercept = acquisition.rescale if acquisition.rescale is not None else (1.0, 0.0)
    lateral = role.view == "LL"

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = role.sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""] if dx else ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = ids.study_date
    ds.InstanceCreationTime = ids.study_time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = role.sop_instance_uid
    ds.StudyDate = ids.study_date
    ds.SeriesDate = ids.study_date
    ds.ContentDate = ids.study_date
    ds.AcquisitionDateTime = ids.study_date + ids.study_time
    ds.StudyTime = ids.study_time
    ds.SeriesTime = ids.study_time
    ds.ContentTime = ids.study_time
    ds.AccessionNumber = ids.accession_number
    ds.Modality = acquisition.modality
    if dx:
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "ECHO synthetic phantom"
    ds.InstitutionName = institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = (
        "XR CHEST PA AND LATERAL" if acquisition.lateral else f"XR CHEST {acquisition.view} 1 VIEW"
    )
    ds.SeriesDescription = "CHEST"
    ds.ManufacturerModelName = "PHANTOM"
    ds.PatientName = ids.patient_name
    ds.PatientID = ids.patient_id
    ds.PatientBirthDate = ids.birth_date
    ds.PatientSex = case.body.sex
    ds.PatientAge = f"{case.body.age:03d}Y"
    ds.PatientIdentityRemoved = "NO"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = role.view
    ds.ImageComments = "Synthetic phantom image generated by ECHO; not a patient."
    ds.StudyInstanceUID = ids.study_instance_uid
    ds.SeriesInstanceUID = ids.series_instance_uid
    ds.StudyID = ids.study_id
    ds.SeriesNumber = 1
    ds.InstanceNumber = role.instance_number
    ds.PatientOrientation = ["P", "F"] if lateral else ["L", "F"]
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.LossyImageCompression = "00"
    spacing = round(DETECTOR_MM / rows, 4)
    ds.ImagerPixelSpacing = [spacing, spacing]
    if dx:
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = Sequence([_coded("43799004", "SCT", "Chest")])
        ds.ViewCodeSequence = Sequence(
            [
                _coded("399067008", "SCT", "lateral")
                if lateral
                else _coded(
                    "399348003" if role.view == "PA" else "399214001",
                    "SCT",
                    "postero-anterior" if role.view == "PA" else "antero-posterior",
                )
            ]
        )
        ds.DetectorType = "SCINTILLATOR"
        ds.PositionerType = "COLUMN"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if acquisition.photometric == "MONOCHROME1" else -1
        ds.AcquisitionContextSequence = Sequence([])
        ds.PresentationLUTShape = "INVERSE" if acquisition.photometric == "MONOCHROME1" else "IDENTITY"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = acquisition.photometric
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = acquisition.bits_stored
    ds.HighBit = acquisition.bits_stored - 1
    ds.PixelRepresentation = 0
    if dx or acquisition.rescale is not None:
        # Modality LUT: Rescale Type is Type 1C whenever slope/intercept are sent (CR as well as DX),
        # and the DX Image Module makes all three Type 1; "US" (unspecified) is the value DX requires.
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleType = "US"
    ds.WindowCenter = f"{center * slope + intercept:.1f}"
    ds.WindowWidth = f"{max(width * slope, 1.0):.1f}"
    ds.WindowCenterWidthExplanation = "BODY"
    ds.VOILUTFunction = "LINEAR"
    if acquisition.voi == "lut":
        ds.VOILUTSequence = Sequence(
            [_voi_lut(acquisition.bits_stored, center, width, acquisition.photometric == "MONOCHROME1")]
        )

    if acquisition.compressed:
        # lossless, so the instance keeps its (deterministic) UID instead of pydicom's fresh random one
        ds.compress(JPEG2000Lossless, stored, generate_instance_uid=False)
    else:
        ds.PixelData = stored.tobytes()
    return ds


def write_dataset(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    ds.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
