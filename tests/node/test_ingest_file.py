"""`Ingestor.store_file`: a data set the SCP streamed to disk is judged like `store` judges bytes, and
moved into the spool without being read whole (issue 15 #9)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from sqlalchemy import select

from node.dicom.header import read_header, read_header_file
from node.dicom.ingest import Ingestor
from node.dicom.outcome import IngestOutcome, ReceivedInstance
from node.dicom.spool import Spool
from node.store.database import Database
from node.store.models import Instance


@pytest.fixture
def ingestor(sqlite_db: Database, tmp_path: Path) -> Ingestor:
    return Ingestor(sqlite_db.sessions, Spool(tmp_path / "spool"))


def streamed(image: Dataset, folder: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    """`image` as a Part 10 file in `syntax`, the way the SCP's incoming folder holds it."""
    image.file_meta.TransferSyntaxUID = syntax
    image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
    image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{image.SOPInstanceUID}.part"
    buffer = io.BytesIO()
    dcmwrite(buffer, image, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian,
             implicit_vr=syntax == ImplicitVRLittleEndian)  # fmt: skip
    path.write_bytes(buffer.getvalue())
    return path


def received(image: Dataset, syntax: str = ExplicitVRLittleEndian) -> ReceivedInstance:
    return ReceivedInstance(image.SOPClassUID, image.SOPInstanceUID, syntax, b"")


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian],
)
def test_a_streamed_file_is_moved_into_the_spool_and_recorded(
    ingestor: Ingestor, sqlite_db: Database, dicom: SimpleNamespace, tmp_path: Path, syntax: str
) -> None:
    image = dicom.chest_image()
    source = streamed(image, tmp_path / "incoming", syntax)
    sent = source.read_bytes()
    assert read_header_file(source) == read_header(sent)
    result = ingestor.store_file(received(image, syntax), source)
    assert result.outcome is IngestOutcome.STORED
    assert not source.exists()
    with sqlite_db.sessions() as session:
        instance = session.scalars(select(Instance)).one()
    assert Path(instance.path).read_bytes() == sent
    assert instance.size == len(sent)
    assert dcmread(instance.path).PixelData == image.PixelData


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_a_cut_file_is_refused_and_left_for_the_caller(
    ingestor: Ingestor, dicom: SimpleNamespace, tmp_path: Path, syntax: str
) -> None:
    image = dicom.chest_image()
    source = streamed(image, tmp_path / "incoming", syntax)
    source.write_bytes(source.read_bytes()[:-100])  # the connection dropped in the pixel data
    result = ingestor.store_file(received(image, syntax), source)
    assert (result.outcome, result.detail) == (
        IngestOutcome.CANNOT_DECODE,
        "pixel data shorter than its Image Pixel module says",
    )
    assert source.exists()
    assert not (tmp_path / "spool").exists()


def test_a_header_problem_is_named_as_store_names_it(
    ingestor: Ingestor, dicom: SimpleNamespace, tmp_path: Path
) -> None:
    image = dicom.chest_image()
    del image.StudyInstanceUID
    result = ingestor.store_file(received(image), streamed(image, tmp_path / "incoming"))
    assert (result.outcome, result.detail) == (IngestOutcome.MISSING_ATTRIBUTE, "StudyInstanceUID is missing")
    other = dicom.chest_image()
    mismatch = ingestor.store_file(received(dicom.chest_image()), streamed(other, tmp_path / "incoming"))
    assert mismatch.outcome is IngestOutcome.UID_MISMATCH


def test_garbage_is_cannot_decode(ingestor: Ingestor, dicom: SimpleNamespace, tmp_path: Path) -> None:
    source = tmp_path / "garbage.part"
    source.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    result = ingestor.store_file(received(dicom.chest_image()), source)
    assert result.outcome is IngestOutcome.CANNOT_DECODE
