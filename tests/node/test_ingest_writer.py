"""The ingest writer (`node.dicom.writer`): instances that queue while it commits share one transaction,
one that fails fails alone, nothing commits before its file's fsync (the caller's settle) returned,
and SQLite connections go back to the pool as they came."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.dicom.writer import GroupCommit, NotSettled
from node.store.database import Database
from node.store.models import Association, utcnow


def add_row(session: Session, name: str, now: datetime) -> str:
    """A row per item (an association row: any table does), failing for the item "bad"."""
    if name == "bad":
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
    session.add(
        Association(calling_ae=name, called_ae="ECHO", host="h", port=1, started_at=now, outcome="accepted")
    )
    return name


def rows(db: Database) -> list[str]:
    with db.sessions() as session:
        return sorted(session.scalars(select(Association.calling_ae)))


def behind_a_held_transaction(
    db: Database, names: list[str]
) -> tuple[GroupCommit, list[Callable[[], object]]]:
    """A writer whose first transaction is held open while `names` are submitted, each from a thread of
    its own (as associations do), and queue behind it; then let go. The writer and each name's outcome."""
    inside, release = threading.Event(), threading.Event()

    def held_first(session: Session, name: str, now: datetime) -> str:
        if name == "first":
            inside.set()
            assert release.wait(10)
        return add_row(session, name, now)

    writer: GroupCommit[str, str] = GroupCommit(db.sessions, held_first, utcnow)
    holder = threading.Thread(target=writer.submit, args=("first",))
    holder.start()
    assert inside.wait(10)
    pool = ThreadPoolExecutor(len(names))
    futures = [pool.submit(writer.submit, name) for name in names]
    while writer._queue.qsize() < len(names) and not release.wait(0.01):
        pass  # until all of them are queued
    release.set()
    pool.shutdown(wait=True)
    holder.join(10)
    return writer, [future.result for future in futures]


def test_instances_waiting_while_the_writer_commits_share_the_next_transaction(sqlite_db: Database) -> None:
    writer, outcomes = behind_a_held_transaction(sqlite_db, [f"n{i}" for i in range(5)])
    assert [outcome() for outcome in outcomes] == [f"n{i}" for i in range(5)]
    assert writer.transactions == 2 and writer.largest_batch == 5
    assert rows(sqlite_db) == ["first", "n0", "n1", "n2", "n3", "n4"]


def test_an_item_that_fails_fails_alone_and_the_rest_commit(sqlite_db: Database) -> None:
    _, outcomes = behind_a_held_transaction(sqlite_db, ["a", "bad", "b"])
    assert outcomes[0]() == "a" and outcomes[2]() == "b"
    with pytest.raises(IntegrityError):
        outcomes[1]()
    assert rows(sqlite_db) == ["a", "b", "first"]


def test_sqlite_commits_without_fsync_and_the_pool_gets_full_sync_back(sqlite_db: Database) -> None:
    seen: list[int] = []

    def look(session: Session, name: str, now: datetime) -> str:
        seen.append(session.execute(text("PRAGMA synchronous")).scalar_one())
        return add_row(session, name, now)

    writer: GroupCommit[str, str] = GroupCommit(sqlite_db.sessions, look, utcnow)
    assert writer.submit("one") == "one"
    assert seen == [1]  # NORMAL: the spool is the source of truth (node.dicom.recover)
    with sqlite_db.engine.connect() as connection:  # the same pooled connection, back in the pool
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL


def test_the_writer_thread_ends_when_idle_and_comes_back(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.dicom.writer.IDLE_EXIT_S", 0.05)
    writer: GroupCommit[str, str] = GroupCommit(sqlite_db.sessions, add_row, utcnow)
    assert writer.submit("one") == "one"
    thread = writer._thread
    assert thread is not None
    thread.join(5)
    assert writer._thread is None
    assert writer.submit("two") == "two"
    with sqlite_db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Association)) == 2


def test_the_commit_waits_for_the_callers_settle(sqlite_db: Database) -> None:
    writer: GroupCommit[str, str] = GroupCommit(sqlite_db.sessions, add_row, utcnow)
    seen_during_settle: list[list[str]] = []

    def settle() -> None:  # the file's fsync, in the calling thread
        time.sleep(0.2)  # the writer has written the row by now, and must not have committed it
        seen_during_settle.append(rows(sqlite_db))

    assert writer.submit("one", settle) == "one"
    assert seen_during_settle == [[]]
    assert rows(sqlite_db) == ["one"]


def test_a_failed_settle_commits_nothing_of_its_item_and_raises_its_error(sqlite_db: Database) -> None:
    writer: GroupCommit[str, str] = GroupCommit(sqlite_db.sessions, add_row, utcnow)

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        writer.submit("lost", disk_full)
    assert writer.submit("kept", lambda: None) == "kept"
    assert rows(sqlite_db) == ["kept"]


def test_a_settle_that_does_not_return_in_time_fails_its_item_only(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("node.dicom.writer.SETTLE_WAIT_S", 0.1)
    writer: GroupCommit[str, str] = GroupCommit(sqlite_db.sessions, add_row, utcnow)
    with pytest.raises(NotSettled):
        writer.submit("hung", lambda: time.sleep(0.5))
    assert writer.submit("next", lambda: None) == "next"
    assert rows(sqlite_db) == ["next"]
