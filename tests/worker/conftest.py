"""Fixtures for the worker: a migrated database, studies stored in the spool the way the SCP stores
them, an engine stand-in, and Celery apps on real brokers (Redis on 127.0.0.1:6379/15 under a key
prefix of their own, and kombu's SQL transport on SQLite)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psycopg
import pytest
import redis
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy.orm import sessionmaker

from echo.runtime.images import display_pixels
from echo.runtime.result import GeneratedReport
from node.config.settings import Settings, load_settings
from node.dicom.ingest import Ingestor
from node.dicom.outcome import ReceivedInstance
from node.dicom.spool import Spool
from node.store.database import Database, make_engine, migrate, open_database
from node.store.models import Study
from node.store.states import StudyState
from node.store.transitions import transition
from worker.inference import StudyInference, model_facts, register_model

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Database]:
    """A migrated, uniquely named database on the local PostgreSQL, dropped when the session ends."""
    name = f"echo_worker_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    migrate(engine)
    yield Database(engine, sessionmaker(engine, expire_on_commit=False))
    engine.dispose()
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    database = open_database(settings)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def add_study(database: Database) -> Callable[..., int]:
    """add_study(state=QUEUED): a study row; returns its id."""

    def add(state: StudyState = StudyState.QUEUED) -> int:
        now = datetime.now(UTC)
        with database.sessions.begin() as session:
            study = Study(
                study_instance_uid=f"1.2.826.0.1.{uuid.uuid4().int}"[:64],
                state=state,
                first_received_at=now,
                last_received_at=now,
            )
            session.add(study)
            session.flush()
            return study.id

    return add


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the shared Redis database; its keys are deleted afterwards."""
    prefix = f"echo-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


# --- studies in the spool, and an engine stand-in --------------------------------------------------


def chest_image(
    *,
    study_uid: str | None = None,
    view_position: str | None = "PA",
    instance_number: int = 1,
    accession: str = "ACC0042",
    patient_id: str = "MRN0042",
    **attributes: object,
) -> Dataset:
    """A small complete CR chest image (16-bit MONOCHROME2) with an order; keyword overrides set attributes."""
    image = Dataset()
    image.file_meta = FileMetaDataset()
    image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    image.SOPClassUID = ComputedRadiographyImageStorage
    image.SOPInstanceUID = generate_uid()
    image.StudyInstanceUID = study_uid or generate_uid()
    image.SeriesInstanceUID = generate_uid()
    image.PatientName = "Doe^Jane"
    image.PatientID = patient_id
    image.PatientBirthDate = "19700101"
    image.PatientSex = "F"
    image.AccessionNumber = accession
    image.StudyDate, image.StudyTime = "20250102", "030405"
    image.StudyDescription = "XR CHEST"
    image.ReferringPhysicianName = ""
    image.StudyID = "1"
    image.Modality = "CR"
    image.BodyPartExamined = "CHEST"
    if view_position is not None:
        image.ViewPosition = view_position
    image.InstanceNumber = instance_number
    image.SamplesPerPixel = 1
    image.PhotometricInterpretation = "MONOCHROME2"
    image.Rows = image.Columns = 64
    image.BitsAllocated, image.BitsStored, image.HighBit, image.PixelRepresentation = 16, 12, 11, 0
    image.PixelData = ((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 4096).tobytes()
    for keyword, value in attributes.items():
        setattr(image, keyword, value)
    return image


def part10(image: Dataset) -> bytes:
    image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
    image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
    buffer = io.BytesIO()
    dcmwrite(buffer, image, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def images() -> SimpleNamespace:
    return SimpleNamespace(chest=chest_image, part10=part10)


@pytest.fixture
def store_study(database: Database, settings: Settings) -> Callable[..., int]:
    """store_study(*images, state=QUEUED): ingest the images into the spool and database the way the
    SCP does, then move the study along the state machine; returns the study id."""
    ingestor = Ingestor(database.sessions, Spool(settings.spool_dir))

    def store(*datasets: Dataset, state: StudyState = StudyState.QUEUED) -> int:
        study_ids = set()
        for dataset in datasets:
            result = ingestor.store(
                ReceivedInstance(
                    dataset.SOPClassUID,
                    dataset.SOPInstanceUID,
                    str(dataset.file_meta.TransferSyntaxUID),
                    part10(dataset),
                )
            )
            assert result.stored, result.detail
            study_ids.add(result.study_id)
        [study_id] = study_ids
        path = {
            StudyState.RECEIVED: [],
            StudyState.QUEUED: [StudyState.COMPLETE, StudyState.QUEUED],
            StudyState.FAILED: [StudyState.COMPLETE, StudyState.QUEUED, StudyState.FAILED],
        }[state]
        with database.sessions.begin() as session:
            study = session.get_one(Study, study_id)
            for step in path:
                transition(session, study, step, "test")
            study.enqueued_at = datetime.now(UTC) if state is StudyState.QUEUED else None
        return study_id

    return store


@dataclass
class FakeEngine:
    """Stands in for echo.runtime.Engine: reads the image with the engine's own reader (so a bad image
    fails as it would), records what it read, and returns the text it is given."""

    model_dir: Path
    findings: str = "Heart size is normal.\nNo pleural effusion."
    impression: str = "No acute cardiopulmonary process."
    error: BaseException | None = None
    read: list[Path] = field(default_factory=list)
    redecoded_findings: str | None = None  # what a re-decode writes (None: the same text again)
    decodes: list[str] = field(default_factory=list)  # the decoding of each call, in order
    manifest: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(
            name="echo-test-student", version="0123456789abcdef", generation=SimpleNamespace(block_size=8)
        )
    )

    def generate(self, image: Path, **options: object) -> GeneratedReport:
        """The given text; with `redecoded_findings` set, a re-decode (decode="multistep") writes that."""
        if self.error is not None:
            raise self.error
        display_pixels(image)
        self.read.append(Path(image))
        self.decodes.append(str(options.get("decode") or "onestep"))
        redecode = options.get("decode") == "multistep" and self.redecoded_findings is not None
        findings = self.redecoded_findings if redecode else self.findings
        text = f"FINDINGS: {findings}\nIMPRESSION: {self.impression}"
        return GeneratedReport(
            findings=findings,
            impression=self.impression,
            text=text,
            tokens=17,
            token_ids=tuple(range(17)),
            forwards=3,
            seconds=0.25,
            timings={"preprocess": 0.05, "vision": 0.1, "prefill": 0.05, "decode": 0.05, "total": 0.25},
            model_version=self.manifest.version,
            decode=str(options.get("decode") or "onestep"),
            steps=options.get("steps") if options.get("decode") else None,
        )


@pytest.fixture
def engine(tmp_path: Path) -> FakeEngine:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "manifest.json").write_text('{"name": "echo-test-student"}')
    return FakeEngine(model_dir)


@pytest.fixture
def node_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the worker tests' data dir with overrides (pacs, ris, delivery policy ...).

    One SR per PACS (the narrative one) unless `sr_templates` says otherwise: the outbox's bookkeeping
    tests count messages; the AI Results SR has tests of its own (test_outbox_structured.py)."""

    def make(**overrides: object) -> Settings:
        return load_settings(data_dir=tmp_path / "data", **{"sr_templates": "2000", **overrides})

    return make


@pytest.fixture
def report_for(database: Database, engine: FakeEngine) -> Callable[[int, Settings], int]:
    """report_for(study_id, settings): run inference with the stand-in engine; returns the report id
    (its delivery rows follow `settings.pacs` / `settings.ris`)."""

    def run(study_id: int, settings: Settings) -> int:
        inference = StudyInference(
            database.sessions,
            settings,
            lambda: engine,
            lambda loaded: register_model(database.sessions, model_facts(loaded)),
            stale_after=timedelta(seconds=360),
        )
        result = inference.run(study_id, f"task-{study_id}")
        assert result.report_id is not None, result.detail
        return result.report_id

    return run


class Clock:
    """A settable UTC clock for the outbox, `now()` and `advance(seconds)`; it starts a second ahead of
    the real time, so rows written just before (with the real clock) are due."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC) + timedelta(seconds=1)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)

    def catch_up(self) -> None:
        """At least a second ahead of the real time again: rows written since (with the real clock,
        on a slow machine more than a second after the clock was made) are due."""
        self.current = max(self.current, datetime.now(UTC) + timedelta(seconds=1))


@pytest.fixture
def clock() -> Clock:
    return Clock()
