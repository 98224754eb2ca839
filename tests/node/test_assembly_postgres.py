"""Assembly and ingest racing on PostgreSQL: a study is never queued while an instance of it is being stored.

Two threads, two sessions, a real server. One side is held inside its transaction; the test waits
until the other side is blocked on the study row's lock in PostgreSQL, then lets the first commit.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from pydicom.uid import ExplicitVRLittleEndian

import node.dicom.assembly as assembly_module
import node.dicom.ingest as ingest_module
from node.config.settings import load_settings
from node.dicom.assembly import StudyAssembler
from node.dicom.association_log import AssociationLog, Peer
from node.dicom.ingest import Ingestor
from node.dicom.outcome import ReceivedInstance
from node.dicom.spool import Spool
from node.store.database import Database, migrate, open_database
from node.store.models import Study
from node.store.states import AssociationOutcome, StudyState

pytestmark = pytest.mark.integration

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
QUIET = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """A migrated database of this test's own (the session's shared one is dropped to base elsewhere)."""
    name = f"echo_race_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    database = open_database(load_settings(data_dir=tmp_path / "data", database_url=url))
    migrate(database.engine)
    try:
        yield SimpleNamespace(database=database, dsn=f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        database.dispose()
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def parts(postgres: SimpleNamespace, tmp_path: Path, publisher) -> SimpleNamespace:
    database: Database = postgres.database
    clock = Clock()
    return SimpleNamespace(
        clock=clock,
        database=database,
        ingestor=Ingestor(database.sessions, Spool(tmp_path / "spool"), clock),
        associations=AssociationLog(database.sessions, clock),
        assembler=StudyAssembler(database.sessions, QUIET, publisher, clock),
    )


def store(parts: SimpleNamespace, dicom: SimpleNamespace, association_id: int, **options: object) -> int:
    image = dicom.chest_image(**options)
    result = parts.ingestor.store(
        ReceivedInstance(
            image.SOPClassUID,
            image.SOPInstanceUID,
            ExplicitVRLittleEndian,
            dicom.part10(image),
            association_id,
        )
    )
    assert result.stored and result.study_id is not None
    return result.study_id


def state_of(parts: SimpleNamespace, study_id: int) -> Study:
    with parts.database.sessions() as session:
        return session.get_one(Study, study_id)


def wait_until_blocked_on_a_lock(dsn: str, timeout_s: float = 10.0) -> None:
    """Until a session of the test's database waits for a lock (the other side reached the row)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the second session never waited for the study row's lock")


class Held:
    """Runs `work` in a thread that stops at `pause()` (called inside its transaction) until released."""

    def __init__(self, work: Callable[[], object]) -> None:
        self.inside, self.go = threading.Event(), threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)

    def _run(self, work: Callable[[], object]) -> None:
        try:
            self.result = work()
        except BaseException as error:  # reported by join()
            self.error = error
            self.inside.set()

    def pause(self) -> None:
        self.inside.set()
        assert self.go.wait(20), "never released"

    def join(self) -> object:
        self.thread.join(20)
        assert not self.thread.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def run_in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    return thread, box


def test_assembly_waits_for_an_instance_being_stored_and_leaves_the_study_received(
    parts: SimpleNamespace, postgres: SimpleNamespace, dicom: SimpleNamespace, publisher, monkeypatch
) -> None:
    first = parts.associations.opened(Peer("STORESCU", "ECHO", "127.0.0.1", 4242))
    study_id = store(parts, dicom, first.id)
    study_uid = state_of(parts, study_id).study_instance_uid
    parts.associations.ended(first, AssociationOutcome.RELEASED)
    parts.clock.advance(QUIET)  # quiet: assembly may decide it now ...
    second = parts.associations.opened(Peer("STORESCU", "ECHO", "127.0.0.1", 4243))

    # ... while a second instance is being stored: its transaction is held open after writing the rows.
    original = ingest_module._upsert_instance

    def upsert_then_hold(session, sop_instance_uid, fields):
        outcome = original(session, sop_instance_uid, fields)
        session.flush()
        ingest.pause()
        return outcome

    monkeypatch.setattr(ingest_module, "_upsert_instance", upsert_then_hold)
    ingest = Held(lambda: store(parts, dicom, second.id, study_uid=study_uid))
    ingest.thread.start()
    assert ingest.inside.wait(10)
    sweeping, swept = run_in_thread(parts.assembler.sweep)
    wait_until_blocked_on_a_lock(postgres.dsn)
    ingest.go.set()
    assert ingest.join() == study_id
    sweeping.join(20)
    assert swept and swept[0].queued == []  # type: ignore[attr-defined]
    assert state_of(parts, study_id).state is StudyState.RECEIVED
    assert publisher.published == []

    monkeypatch.setattr(ingest_module, "_upsert_instance", original)
    parts.associations.ended(second, AssociationOutcome.RELEASED)
    parts.clock.advance(QUIET)
    assert parts.assembler.sweep().queued == [study_id]  # after a quiet period of its own, once
    assert publisher.published == [study_id]


def test_an_instance_stored_while_assembly_decides_sees_the_queued_study(
    parts: SimpleNamespace, postgres: SimpleNamespace, dicom: SimpleNamespace, monkeypatch, caplog
) -> None:
    first = parts.associations.opened(Peer("STORESCU", "ECHO", "127.0.0.1", 4242))
    study_id = store(parts, dicom, first.id)
    study_uid = state_of(parts, study_id).study_instance_uid
    parts.associations.ended(first, AssociationOutcome.RELEASED)
    parts.clock.advance(QUIET)

    # Assembly is held inside its transaction, right after moving the study to queued.
    original = assembly_module.transition

    def transition_then_hold(session, study, to, reason=None):
        event = original(session, study, to, reason)
        if StudyState(to) is StudyState.QUEUED:
            session.flush()
            deciding.pause()
        return event

    monkeypatch.setattr(assembly_module, "transition", transition_then_hold)
    deciding = Held(parts.assembler.sweep)
    deciding.thread.start()
    assert deciding.inside.wait(10)
    second = parts.associations.opened(Peer("STORESCU", "ECHO", "127.0.0.1", 4243))
    with caplog.at_level(logging.INFO, logger="node.dicom.ingest"):
        storing, stored = run_in_thread(lambda: store(parts, dicom, second.id, study_uid=study_uid))
        wait_until_blocked_on_a_lock(postgres.dsn)
        deciding.go.set()
        assert deciding.join().queued == [study_id]  # type: ignore[attr-defined]
        storing.join(20)
    assert stored == [study_id]
    # The instance waited for the decision and was told the truth: it came after the queueing.
    assert f"for study {study_id} in state queued: stored, study not re-queued" in caplog.text
