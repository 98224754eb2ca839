"""Fixtures for the node: settings in a temp dir, migrated databases (SQLite and a throwaway
PostgreSQL database), a node started in-process on a free port, DCMTK's tools as the PACS, and
small DICOM images.

Helpers reach the tests as fixtures (`dicom`, `wait_for`), not by import, so the tests do not
depend on the directory pytest is started from."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psycopg
import pytest
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.config.settings import Settings, load_settings
from node.serve.runtime import Node
from node.store.database import Database, migrate, open_database

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CALLING_AE = "STORESCU"

# --- DICOM images -------------------------------------------------------------------------------

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "MRN-SECRET-0042"


def chest_image(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    modality: str = "CR",
    body_part: str | None = "CHEST",
    accession: str = "ACC0001",
    size: int = 64,
) -> Dataset:
    """A complete little CR image (16-bit MONOCHROME2), explicit VR little endian."""
    image = Dataset()
    image.file_meta = FileMetaDataset()
    image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    image.SOPClassUID = ComputedRadiographyImageStorage
    image.SOPInstanceUID = sop_uid or generate_uid()
    image.StudyInstanceUID = study_uid or generate_uid()
    image.SeriesInstanceUID = series_uid or generate_uid()
    image.PatientName = PATIENT_NAME
    image.PatientID = PATIENT_ID
    image.AccessionNumber = accession
    image.Modality = modality
    if body_part is not None:
        image.BodyPartExamined = body_part
    image.ViewPosition = "PA"
    image.StudyDate = "20250102"
    image.SamplesPerPixel = 1
    image.PhotometricInterpretation = "MONOCHROME2"
    image.Rows = size
    image.Columns = size
    image.BitsAllocated = 16
    image.BitsStored = 12
    image.HighBit = 11
    image.PixelRepresentation = 0
    pixels = (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 7) % 4096
    image.PixelData = pixels.tobytes()
    return image


def as_jpeg2000(image: Dataset) -> Dataset:
    image.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    return image


def save(image: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
    image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
    dcmwrite(path, image, enforce_file_format=True)
    return path


def part10(image: Dataset) -> bytes:
    """The image as a Part 10 byte stream, the way the SCP hands data sets to ingest."""
    image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
    image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
    buffer = io.BytesIO()
    dcmwrite(buffer, image, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def dicom() -> SimpleNamespace:
    return SimpleNamespace(
        chest_image=chest_image,
        as_jpeg2000=as_jpeg2000,
        save=save,
        part10=part10,
        PATIENT_NAME=PATIENT_NAME,
        PATIENT_ID=PATIENT_ID,
    )


# --- services and the node ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., object]:
    """wait_for(condition, timeout_s, what): poll until `condition()` is truthy, else fail the test."""
    return _wait_for


class RecordingPublisher:
    """Stands in for the broker where a test is about assembly, not Celery; can be told to fail."""

    def __init__(self) -> None:
        self.published: list[int] = []
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    def publish_inference(self, study_id: int) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        with self._lock:
            self.published.append(study_id)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "port": free_port(),
            "quiet_seconds": 0.5,
            "allowed_callers": CALLING_AE,
            "http": "",  # off: test_serve starts it where it is the subject
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(load_settings(data_dir=tmp_path / "db"))
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A uniquely named database on the local PostgreSQL, dropped when the session ends."""
    name = f"echo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def start_node(publisher: RecordingPublisher) -> Iterator[Callable[[Settings], Node]]:
    """Start nodes in-process (SCP + assembly, no worker); all are stopped at the end of the test."""
    nodes: list[Node] = []

    def start(settings: Settings) -> Node:
        node = Node(settings, publisher=publisher, embedded_worker=False, bind_address="127.0.0.1")
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="session")
def dcmtk() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a DCMTK tool (storescu, echoscu) against the node; the test reads its exit status."""
    if shutil.which("storescu") is None:
        pytest.fail("DCMTK is not installed (Debian package dcmtk)")

    def run(tool: str, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout_s, check=False)

    return run


@pytest.fixture
def scu() -> SimpleNamespace:
    """A pynetdicom SCU for exact statuses and rejection reasons (DCMTK's tools only give exit codes)."""

    def associate(settings: Settings, calling_ae: str = CALLING_AE, called_ae: str | None = None, **kwargs):
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(Verification)
        ae.add_requested_context(ComputedRadiographyImageStorage, ExplicitVRLittleEndian)
        return ae.associate("127.0.0.1", settings.port, ae_title=called_ae or settings.ae_title, **kwargs)

    def store(settings: Settings, *images: Dataset) -> list[Dataset]:
        """C-STORE each image in one association; the response data sets (Status, ErrorComment)."""
        association = associate(settings)
        assert association.is_established, "the node refused the association"
        try:
            return [association.send_c_store(image) for image in images]
        finally:
            association.release()

    return SimpleNamespace(associate=associate, store=store)
