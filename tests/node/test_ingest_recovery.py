"""The start-up re-scan (`node.dicom.recover`): the spool is the source of truth, the rows follow it."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select

from node.dicom.assembly import StudyAssembler
from node.dicom.incoming import INCOMING_FOLDER
from node.dicom.ingest import Ingestor
from node.dicom.outcome import ReceivedInstance
from node.dicom.recover import RESCAN_MARGIN, recover_spool
from node.dicom.spool import Spool
from node.store.database import Database
from node.store.models import Instance, Study, StudyEvent
from node.store.states import StudyState


@pytest.fixture
def ingestor(sqlite_db: Database, tmp_path: Path) -> Ingestor:
    return Ingestor(sqlite_db.sessions, Spool(tmp_path / "spool"))


def spool_file(ingestor: Ingestor, dicom: SimpleNamespace, image: Dataset) -> Path:
    """`image` in the spool where ingest puts it, without any row: what a power cut can leave."""
    path = ingestor.spool.path_for(image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPInstanceUID)
    ingestor.spool.write(path, dicom.part10(image))
    return path


def store(ingestor: Ingestor, dicom: SimpleNamespace, image: Dataset) -> int:
    result = ingestor.store(
        ReceivedInstance(image.SOPClassUID, image.SOPInstanceUID, ExplicitVRLittleEndian, dicom.part10(image))
    )
    assert result.stored and result.study_id is not None
    return result.study_id


def instances(db: Database) -> list[Instance]:
    with db.sessions() as session:
        return list(session.scalars(select(Instance).order_by(Instance.id)))


def test_a_spool_file_without_rows_is_restored_and_its_study_assembled(
    ingestor: Ingestor, sqlite_db: Database, dicom: SimpleNamespace, publisher
) -> None:
    image = dicom.chest_image(accession="ACC-LOST")
    path = spool_file(ingestor, dicom, image)

    recovery = recover_spool(ingestor)

    assert (recovery.restored, recovery.torn_removed, recovery.failed) == (1, 0, 0)
    [instance] = instances(sqlite_db)
    assert (instance.path, instance.size, instance.association_id) == (str(path), path.stat().st_size, None)
    assert instance.transfer_syntax_uid == ExplicitVRLittleEndian
    with sqlite_db.sessions() as session:
        study = session.get_one(Study, instance.study_id)
        assert (study.accession_number, study.state) == ("ACC-LOST", StudyState.RECEIVED)
        assert [e.to_state for e in session.scalars(select(StudyEvent))] == [StudyState.RECEIVED]
    swept = StudyAssembler(sqlite_db.sessions, 0.0, publisher).sweep()
    assert swept.queued == [instance.study_id] and publisher.published == [instance.study_id]
    assert recover_spool(ingestor).restored == 0  # once restored, the row is there


def test_files_cut_short_and_temp_files_are_removed_and_logged(
    ingestor: Ingestor, sqlite_db: Database, dicom: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    image = dicom.chest_image()
    torn = ingestor.spool.path_for(image.StudyInstanceUID, image.SeriesInstanceUID, image.SOPInstanceUID)
    ingestor.spool.write(torn, dicom.part10(image)[:-200])  # renamed into place, power cut before its fsync
    leftovers = [
        torn.parent / ".incoming-abc.part",  # a file being written into place
        ingestor.spool.root / INCOMING_FOLDER / ".incoming-def.part",  # a data set still arriving
    ]
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(dicom.part10(dicom.chest_image()))

    with caplog.at_level(logging.WARNING, logger="node.dicom.recover"):
        recovery = recover_spool(ingestor)

    assert (recovery.restored, recovery.torn_removed, recovery.temp_files_removed) == (0, 1, 2)
    assert not torn.exists() and not any(leftover.exists() for leftover in leftovers)
    assert instances(sqlite_db) == []
    assert "cut short (pixel data shorter than its Image Pixel module says)" in caplog.text
    assert "0 instances restored, 1 files cut short and 2 temp files removed" in caplog.text
    assert dicom.PATIENT_ID not in caplog.text and image.StudyInstanceUID not in caplog.text


def test_a_re_sent_instance_whose_update_was_lost_is_recorded_again(
    ingestor: Ingestor, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    image = dicom.chest_image()
    store(ingestor, dicom, image)
    [before] = instances(sqlite_db)
    image.PatientComments = "sent again; its commit was lost"
    spool_file(ingestor, dicom, image)  # the newer file, its row still the old one

    assert recover_spool(ingestor).restored == 1

    [after] = instances(sqlite_db)
    assert after.id == before.id and after.received_at > before.received_at
    assert after.size == len(dicom.part10(image)) != before.size


def test_recorded_files_are_left_alone(
    ingestor: Ingestor, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    for _ in range(3):
        store(ingestor, dicom, dicom.chest_image())
    before = [(i.id, i.received_at) for i in instances(sqlite_db)]

    recovery = recover_spool(ingestor)

    assert not recovery
    assert [(i.id, i.received_at) for i in instances(sqlite_db)] == before


def test_files_from_well_before_the_newest_row_are_not_opened(
    ingestor: Ingestor, sqlite_db: Database, dicom: SimpleNamespace
) -> None:
    old = spool_file(ingestor, dicom, dicom.chest_image())
    long_ago = time.time() - 2 * RESCAN_MARGIN.total_seconds()
    for item in (old, old.parent):  # the file and its series folder, as a month-old study has them
        os.utime(item, (long_ago, long_ago))
    store(ingestor, dicom, dicom.chest_image())  # the newest committed instance: now

    assert recover_spool(ingestor).restored == 0
    assert len(instances(sqlite_db)) == 1


def test_a_file_whose_row_cannot_be_written_is_counted_and_left_for_the_next_start(
    ingestor: Ingestor, sqlite_db: Database, dicom: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    path = spool_file(ingestor, dicom, dicom.chest_image())

    def unavailable(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    with monkeypatch.context() as patch:
        patch.setattr("node.dicom.ingest._upsert_instance", unavailable)
        recovery = recover_spool(ingestor)
    assert (recovery.restored, recovery.failed) == (0, 1) and path.exists()
    assert recover_spool(ingestor).restored == 1
