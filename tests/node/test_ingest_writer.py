"""The ingest writer (`node.dicom.writer`): instances that queue while it commits share one transaction,
one that fails fails alone, and SQLite connections go back to the pool as they came."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node.dicom.writer import GroupCommit
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
