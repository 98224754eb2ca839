"""What `echo-node demo` says when no report comes (issue 15 #12): a study the node never handed to
its broker is the broker's problem, not a missing worker's."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from node.config.settings import load_settings
from node.dicom.ingest import Ingestor
from node.dicom.outcome import ReceivedInstance
from node.dicom.spool import Spool
from node.ops.demo import DemoError, wait_for_outcome
from node.store.database import migrate, open_database
from node.store.models import Study, utcnow
from node.store.states import StudyState
from node.store.transitions import transition


@pytest.mark.parametrize(
    ("enqueued", "message"),
    [
        (
            False,
            "the node has not handed the study to its broker yet; is the broker (ECHO_BROKER_URL) up? "
            "The node's log and `echo-admin status` say",
        ),
        (True, "the study is queued; is a worker running (`echo-admin status` shows the queues)?"),
    ],
)
def test_no_report_names_the_broker_when_the_study_never_reached_it(
    enqueued: bool, message: str, tmp_path: Path, dicom: SimpleNamespace
) -> None:
    database = open_database(load_settings(data_dir=tmp_path))
    migrate(database.engine)
    image = dicom.chest_image()
    study_id = (
        Ingestor(database.sessions, Spool(tmp_path / "spool"))
        .store(
            ReceivedInstance(
                image.SOPClassUID, image.SOPInstanceUID, ExplicitVRLittleEndian, dicom.part10(image), None
            )
        )
        .study_id
    )
    with database.sessions.begin() as session:
        study = session.get_one(Study, study_id)
        transition(session, study, StudyState.COMPLETE, "quiet")
        transition(session, study, StudyState.QUEUED, "chest")
        study.enqueued_at = utcnow() if enqueued else None
    try:
        with pytest.raises(DemoError) as caught:
            wait_for_outcome(database.sessions, image.StudyInstanceUID, 0.3, poll_seconds=0.05)
    finally:
        database.dispose()
    assert str(caught.value) == f"no report within 0.3 s: {message}"
