"""Ingest: every outcome, the file on disk, the rows, and what is left when something fails."""

from __future__ import annotations

import errno
import io
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from node.dicom.header import read_header
from node.dicom.ingest import Ingestor
from node.dicom.outcome import IngestOutcome, ReceivedInstance
from node.dicom.spool import Spool
from node.store.database import Database
from node.store.models import Base, Instance, Study, StudyEvent
from node.store.states import StudyState
from node.store.transitions import transition


@pytest.fixture
def ingestor(sqlite_db: Database, tmp_path: Path) -> Ingestor:
    return Ingestor(sqlite_db.sessions, Spool(tmp_path / "spool"))


@pytest.fixture
def send(ingestor: Ingestor, dicom: SimpleNamespace):
    """send(image, announced=None, transfer_syntax=...): store `image` as a C-STORE announcing `announced`."""

    def store(
        image: Dataset, announced: Dataset | None = None, transfer_syntax: str = ExplicitVRLittleEndian
    ):
        announced = announced or image
        return ingestor.store(
            ReceivedInstance(
                sop_class_uid=announced.SOPClassUID,
                sop_instance_uid=announced.SOPInstanceUID,
                transfer_syntax_uid=transfer_syntax,
                encoded=dicom.part10(image),
            )
        )

    return store


def count(db: Database, model: type[Base]) -> int:
    with db.sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_new_instance_is_written_as_sent_and_recorded(
    send, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    image = dicom.chest_image(accession="ACC7")
    result = send(image)
    assert result.outcome is IngestOutcome.STORED and result.stored
    with sqlite_db.sessions() as session:
        instance = session.scalars(select(Instance)).one()
        study = session.get_one(Study, result.study_id)
        events = [(e.from_state, e.to_state) for e in study.events]
    assert Path(instance.path).read_bytes() == dicom.part10(image)
    assert instance.size == len(dicom.part10(image))
    assert (instance.transfer_syntax_uid, instance.view_position) == (ExplicitVRLittleEndian, "PA")
    assert (study.state, study.accession_number, study.modality, study.body_part) == (
        StudyState.RECEIVED,
        "ACC7",
        "CR",
        "CHEST",
    )
    assert events == [(None, StudyState.RECEIVED)]
    assert image.StudyInstanceUID not in instance.path  # paths are hashed


def test_the_same_instance_twice_gives_one_row_and_one_file(
    send, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    image = dicom.chest_image()
    first = send(image)
    image.PatientComments = "sent again"
    again = send(image)
    assert (first.outcome, again.outcome) == (IngestOutcome.STORED, IngestOutcome.STORED_AGAIN)
    assert count(sqlite_db, Instance) == 1 and count(sqlite_db, Study) == 1
    with sqlite_db.sessions() as session:
        path = Path(session.scalars(select(Instance.path)).one())
    assert dcmread(path).PatientComments == "sent again"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_jpeg2000_keeps_its_transfer_syntax_on_disk(
    send, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    result = send(dicom.as_jpeg2000(dicom.chest_image()), transfer_syntax=JPEG2000Lossless)
    assert result.outcome is IngestOutcome.STORED
    with sqlite_db.sessions() as session:
        instance = session.scalars(select(Instance)).one()
    assert dcmread(instance.path).file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert instance.transfer_syntax_uid == JPEG2000Lossless


def _without(keyword: str):
    return lambda image: delattr(image, keyword)


def _with(keyword: str, value: object):
    return lambda image: setattr(image, keyword, value)


@pytest.mark.parametrize(
    ("damage", "outcome", "detail"),
    [
        (_without("StudyInstanceUID"), IngestOutcome.MISSING_ATTRIBUTE, "StudyInstanceUID is missing"),
        (_without("SeriesInstanceUID"), IngestOutcome.MISSING_ATTRIBUTE, "SeriesInstanceUID is missing"),
        (
            _with("StudyInstanceUID", "1.2.abc"),
            IngestOutcome.INVALID_ATTRIBUTE,
            "StudyInstanceUID is not a valid UID",
        ),
        (
            _with("SeriesInstanceUID", "1." * 40),
            IngestOutcome.INVALID_ATTRIBUTE,
            "SeriesInstanceUID is not a valid UID",
        ),
        (
            _with("AccessionNumber", "A" * 17),
            IngestOutcome.INVALID_ATTRIBUTE,
            "AccessionNumber is longer than 16",
        ),
        (_without("Rows"), IngestOutcome.CANNOT_DECODE, "cannot decode data set (AttributeError)"),
        (
            lambda image: setattr(image, "PixelData", image.PixelData[:-100]),
            IngestOutcome.CANNOT_DECODE,
            "pixel data shorter",
        ),
    ],
)
def test_malformed_data_sets_are_refused_and_nothing_is_kept(
    send,
    sqlite_db: Database,
    tmp_path: Path,
    dicom: SimpleNamespace,
    damage,
    outcome: IngestOutcome,
    detail: str,
) -> None:
    image = dicom.chest_image()
    damage(image)
    result = send(image, announced=dicom.chest_image(sop_uid=image.SOPInstanceUID))
    assert result.outcome is outcome
    assert detail in result.detail
    assert count(sqlite_db, Instance) == 0 and count(sqlite_db, Study) == 0
    assert not (tmp_path / "spool").exists()


def _part10_with_body(transfer_syntax: str, body: bytes) -> bytes:
    """Valid file meta (as pynetdicom builds it) followed by `body` as the data set."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = transfer_syntax
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    stream = io.BytesIO()
    stream.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(stream, meta)
    return stream.getvalue() + body


@pytest.mark.parametrize(
    ("transfer_syntax", "outcome", "detail"),
    [
        # zlib refuses a corrupt deflate stream: pydicom cannot decode it at all
        (DeflatedExplicitVRLittleEndian, IngestOutcome.CANNOT_DECODE, "cannot decode data set (error)"),
        # pydicom reads plain garbage as a few odd elements: what the node needs is not there
        (ExplicitVRLittleEndian, IngestOutcome.MISSING_ATTRIBUTE, "SOPClassUID is missing"),
    ],
)
def test_garbage_instead_of_a_data_set_is_refused(
    ingestor: Ingestor, sqlite_db: Database, transfer_syntax: str, outcome: IngestOutcome, detail: str
) -> None:
    encoded = _part10_with_body(transfer_syntax, b"this is not a DICOM data set at all " * 3)
    result = ingestor.store(
        ReceivedInstance("1.2.840.10008.5.1.4.1.1.1", "1.2.3.4", transfer_syntax, encoded)
    )
    assert (result.outcome, result.detail) == (outcome, detail)
    assert count(sqlite_db, Instance) == 0


def test_a_data_set_other_than_the_announced_one_is_refused(send, dicom: SimpleNamespace) -> None:
    result = send(dicom.chest_image(), announced=dicom.chest_image())
    assert result.outcome is IngestOutcome.UID_MISMATCH
    assert result.detail == "SOP Class/Instance UID of the data set differ from the request"


def test_disk_full_answers_out_of_resources_and_keeps_the_stored_file(
    send, sqlite_db: Database, dicom: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = dicom.chest_image()
    send(image)
    with sqlite_db.sessions() as session:
        path = Path(session.scalars(select(Instance.path)).one())
    before = path.read_bytes()

    def disk_full(descriptor: int) -> None:  # fsync of the temp file fails the way a full disk does
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("node.dicom.spool.os.fsync", disk_full)
    image.PatientComments = "would replace"
    result = send(image)
    assert result.outcome is IngestOutcome.DISK_FULL
    assert result.detail == "cannot write file: No space left on device"
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_other_write_errors_are_out_of_resources_too(
    send, dicom: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("node.dicom.spool.tempfile.mkstemp", denied)
    result = send(dicom.chest_image())
    assert result.outcome is IngestOutcome.DISK_ERROR
    assert result.detail == "cannot write file: Permission denied"


def test_a_database_error_answers_out_of_resources_and_keeps_earlier_rows(
    send,
    sqlite_db: Database,
    dicom: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    send(dicom.chest_image())

    def unavailable(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT ...", {"PatientID": dicom.PATIENT_ID}, Exception("database is locked"))

    monkeypatch.setattr("node.dicom.ingest._upsert_instance", unavailable)
    with caplog.at_level(logging.DEBUG):
        result = send(dicom.chest_image())
    assert result.outcome is IngestOutcome.DATABASE_ERROR
    assert result.detail == "database error (Exception)"
    assert count(sqlite_db, Instance) == 1 and count(sqlite_db, Study) == 1  # the new study rolled back
    assert dicom.PATIENT_ID not in caplog.text


def test_logs_carry_no_patient_data(send, dicom: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    image = dicom.chest_image()
    bad = dicom.chest_image(study_uid=image.StudyInstanceUID)
    del bad.SeriesInstanceUID
    with caplog.at_level(logging.DEBUG):
        study_id = send(image).study_id
        send(bad)
    assert f"new study {study_id}" in caplog.text and "SeriesInstanceUID is missing" in caplog.text
    for secret in (
        dicom.PATIENT_ID,
        dicom.PATIENT_NAME,
        "ACC0001",  # the accession number: the node's study id is logged instead
        image.StudyInstanceUID,
        image.SOPInstanceUID,
    ):
        assert secret not in caplog.text


def test_a_radiograph_decides_the_study_even_after_a_presentation_state(
    send, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    first = dicom.chest_image(modality="PR", body_part=None)
    send(first)
    send(dicom.chest_image(study_uid=first.StudyInstanceUID, modality="DX", body_part="CHEST"))
    with sqlite_db.sessions() as session:
        study = session.scalars(select(Study)).one()
    assert (study.modality, study.body_part) == ("DX", "CHEST")


def test_a_late_instance_is_stored_without_reopening_the_study(
    send, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    image = dicom.chest_image()
    study_id = send(image).study_id
    with sqlite_db.sessions.begin() as session:
        session.get_one(Study, study_id).state = StudyState.QUEUED
    late = send(dicom.chest_image(study_uid=image.StudyInstanceUID))
    assert late.outcome is IngestOutcome.STORED
    with sqlite_db.sessions() as session:
        assert session.get_one(Study, study_id).state is StudyState.QUEUED
        assert session.scalar(select(func.count()).select_from(StudyEvent)) == 1


def test_read_header_normalises_coded_values(dicom: SimpleNamespace) -> None:
    header = read_header(dicom.part10(dicom.chest_image(modality="cr", body_part="chest")))
    assert (header.modality, header.body_part, header.patient_id) == ("CR", "CHEST", dicom.PATIENT_ID)


def _study(db: Database, study_id: int | None) -> Study:
    assert study_id is not None
    with db.sessions() as session:
        return session.get_one(Study, study_id)


@pytest.mark.parametrize(
    ("attribute", "keyword"), [("PatientID", "PatientID"), ("AccessionNumber", "AccessionNumber")]
)
def test_instances_disagreeing_on_patient_or_accession_record_the_conflict_without_values(
    send,
    sqlite_db: Database,
    dicom: SimpleNamespace,
    caplog: pytest.LogCaptureFixture,
    attribute: str,
    keyword: str,
) -> None:
    first = dicom.chest_image(accession="ACC-FIRST")
    other = dicom.chest_image(study_uid=first.StudyInstanceUID, accession="ACC-FIRST")
    setattr(other, keyword, "CANARY-OTHER-9")
    with caplog.at_level(logging.DEBUG):
        study_id = send(first).study_id
        assert send(other).stored  # stored (the sender did nothing wrong), but flagged
    study = _study(sqlite_db, study_id)
    assert study.identity_conflict == f"instances disagree on {attribute}"
    assert (study.patient_id, study.accession_number) == (dicom.PATIENT_ID, "ACC-FIRST")  # first kept
    assert f"study {study_id}: instance" in caplog.text and f"on {attribute}" in caplog.text
    for value in ("CANARY-OTHER-9", dicom.PATIENT_ID, "ACC-FIRST"):
        assert value not in caplog.text


def test_a_missing_identifier_is_not_a_conflict_and_conflicts_accumulate(
    send, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    first = dicom.chest_image(modality="PR", body_part=None)
    del first.AccessionNumber
    study_id = send(first).study_id
    send(dicom.chest_image(study_uid=first.StudyInstanceUID, accession="ACC1"))
    assert _study(sqlite_db, study_id).identity_conflict is None
    third = dicom.chest_image(study_uid=first.StudyInstanceUID, accession="ACC2")
    send(third)
    fourth = dicom.chest_image(study_uid=first.StudyInstanceUID, accession="ACC1")
    fourth.PatientID = "SOMEONE-ELSE"
    send(fourth)
    assert _study(sqlite_db, study_id).identity_conflict == "instances disagree on PatientID, AccessionNumber"


def test_a_late_instance_with_another_issuer_of_patient_id_is_flagged(
    send, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    first = dicom.chest_image()
    first.IssuerOfPatientID = "HOSPITAL-A"
    study_id = send(first).study_id
    with sqlite_db.sessions.begin() as session:
        session.get_one(Study, study_id).state = StudyState.QUEUED
    same = dicom.chest_image(study_uid=first.StudyInstanceUID)
    same.IssuerOfPatientID = "HOSPITAL-A"
    send(same)
    assert _study(sqlite_db, study_id).identity_conflict is None
    late = dicom.chest_image(study_uid=first.StudyInstanceUID)
    late.IssuerOfPatientID = "HOSPITAL-B"
    send(late)
    study = _study(sqlite_db, study_id)
    assert (study.state, study.identity_conflict) == (
        StudyState.QUEUED,
        "instances disagree on IssuerOfPatientID",
    )


def _skip(db: Database, study_id: int | None, reason: str) -> None:
    assert study_id is not None
    with db.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        transition(session, study, StudyState.COMPLETE, "quiet")
        transition(session, study, StudyState.SKIPPED, reason)


def test_a_skipped_study_that_receives_a_radiograph_is_reopened(
    send, sqlite_db: Database, dicom: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    lateral = dicom.chest_image()
    lateral.ViewPosition = "LL"
    study_id = send(lateral).study_id
    _skip(sqlite_db, study_id, "lateral view only: waiting for a frontal")
    send(dicom.chest_image(study_uid=lateral.StudyInstanceUID, modality="PR", body_part=None))
    assert _study(sqlite_db, study_id).state is StudyState.SKIPPED  # a presentation state does not
    caplog.clear()
    with caplog.at_level(logging.INFO):
        frontal = send(dicom.chest_image(study_uid=lateral.StudyInstanceUID, modality="DX"))
    assert frontal.outcome is IngestOutcome.STORED
    study = _study(sqlite_db, study_id)
    assert (study.state, study.skip_reason) == (StudyState.RECEIVED, None)
    with sqlite_db.sessions() as session:
        last = session.scalars(select(StudyEvent).order_by(StudyEvent.id.desc()).limit(1)).one()
    assert (last.from_state, last.to_state, last.reason) == (
        StudyState.SKIPPED,
        StudyState.RECEIVED,
        "a CR/DX instance arrived after the skip: assembled again",
    )
    assert f"study {study_id} reopened" in caplog.text and "late instance" not in caplog.text


def test_read_header_keeps_the_issuer_of_patient_id(dicom: SimpleNamespace) -> None:
    image = dicom.chest_image()
    image.IssuerOfPatientID = "  HOSPITAL-A "
    assert read_header(dicom.part10(image)).issuer_of_patient_id == "HOSPITAL-A"
