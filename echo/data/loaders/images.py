"""Cheap checks on a study's image files, and the choice of its frontal image.

Loaders check headers only (DICOM without pixel data, PNG/JPEG without decoding), so a bad file is
caught and skipped at load time without decoding every image; `verify=True` decodes as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from echo.data.preprocess import ImageReadError, load_pixels

BITMAP_SUFFIXES = {".png", ".jpg", ".jpeg"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT", "LLD", "RLD")
_HEADER_TAGS = ["StudyInstanceUID", "AccessionNumber", "ViewPosition", "Rows", "SOPClassUID"]


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_header(path: Path) -> pydicom.Dataset:
    """A DICOM image's identifying attributes; ImageReadError if it is not a readable image."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError) as error:
        raise ImageReadError(f"{path.name}: not a readable DICOM file ({error})") from None
    if "Rows" not in header:
        raise ImageReadError(f"{path.name}: DICOM object is not an image")
    return header


def view_position(path: Path) -> str:
    """The DICOM ViewPosition (upper case), or "" for bitmaps and files without one."""
    if not is_dicom(path):
        return ""
    return str(read_header(path).get("ViewPosition", "") or "").upper()


def check_image(path: Path, verify: bool = False) -> None:
    """Raise ImageReadError unless `path` is a readable DICOM image, PNG or JPEG."""
    if not path.is_file():
        raise ImageReadError(f"{path.name}: no such file")
    if verify:
        load_pixels(path)
    elif is_dicom(path):
        read_header(path)
    else:
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise ImageReadError(f"{path.name}: not a DICOM, PNG or JPEG image ({error})") from None


def choose_frontal(paths: Sequence[Path], views: Sequence[str]) -> Path:
    """PA first, then AP, then any image not marked lateral, else the first image."""
    for wanted in FRONTAL_VIEWS:
        for path, view in zip(paths, views, strict=True):
            if view == wanted:
                return path
    for path, view in zip(paths, views, strict=True):
        if view not in LATERAL_VIEWS:
            return path
    return paths[0]
