"""One thread writes the rows of every received instance, several instances per transaction.

Concurrent associations hand their instances to `GroupCommit.submit` and wait. The writer thread
takes everything that queued while it was committing and writes it in one transaction (group
commit): one commit, and with SQLite one holder of the write lock, instead of one per instance and
association fighting for it. If that transaction fails, each of its instances is tried again in a
transaction of its own, so one bad instance (or a row another process inserted first) fails only
itself. The thread starts with the first instance and ends after a while without any.

With SQLite, the writer's transactions commit with ``PRAGMA synchronous=NORMAL``: the commit is
in the WAL, safe from a crash of the process, but not fsynced (a later commit by any connection, or
a checkpoint, syncs it). A power cut can lose the last of these commits; the spool is the source of
truth (each file is fsynced before it is answered, `node.dicom.spool`) and the start-up re-scan
(`node.dicom.recover`) restores their rows. PostgreSQL commits as configured: its server can fail
without the node restarting, and nothing would re-scan then.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 64  # instances per transaction at most
IDLE_EXIT_S = 30.0  # the thread ends after this long without work (started again by the next submit)
# The longest the writer waits for a caller's `settle` (an fsync) before it gives up on that item: a
# disk that hangs fails its own instances, not every association's.
SETTLE_WAIT_S = 30.0


class NotSettled(RuntimeError):
    """The caller's `settle` failed or did not finish in time: the item's rows were not committed."""


@dataclass
class _Job(Generic[Item, Result]):
    item: Item
    future: Future[Result] = field(default_factory=Future)
    settling: bool = False  # the caller runs a `settle` the commit waits for
    settled: threading.Event = field(default_factory=threading.Event)
    settle_failed: bool = False

    def wait_settled(self) -> None:
        """Before the commit: the caller's `settle` returned (else `NotSettled`, and no commit)."""
        if self.settling and (not self.settled.wait(SETTLE_WAIT_S) or self.settle_failed):
            raise NotSettled("the instance's file was not made durable; its rows are not committed")


class GroupCommit(Generic[Item, Result]):
    """`submit(item, settle)` runs `work(session, item, now)` in the writer's transaction and returns
    its result once that transaction committed (or raises what `work` or the commit raised).

    `settle`, if given, runs in the calling thread while the writer writes the item's rows (the
    file's fsync, while the statements run), and the writer commits only after it returned: the rows
    of a file never commit before the file is durable. If `settle` raises, the rows are not committed
    and `submit` raises what it raised.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        work: Callable[[Session, Item, datetime], Result],
        clock: Callable[[], datetime],
        *,
        name: str = "ingest-writer",
    ) -> None:
        self.sessions = sessions
        self.work = work
        self.clock = clock
        self.name = name
        self._queue: queue.SimpleQueue[_Job[Item, Result]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.transactions = 0  # committed, for tests and the benchmark
        self.largest_batch = 0

    def submit(self, item: Item, settle: Callable[[], object] | None = None) -> Result:
        job: _Job[Item, Result] = _Job(item, settling=settle is not None)
        with self._lock:
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        if settle is not None:
            try:
                settle()
            except BaseException:
                job.settle_failed = True
                job.settled.set()
                with contextlib.suppress(Exception):
                    job.future.result()  # the writer is done with it: nothing of it is committed
                raise
            job.settled.set()
        return job.future.result()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[_Job[Item, Result]]) -> None:
        try:
            results = self._transaction(batch)
        except Exception as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            log.info(
                "a transaction of %d instances failed (%s); writing them one by one",
                len(batch),
                type(error).__name__,
            )
            for job in batch:
                try:
                    [result] = self._transaction([job])
                except Exception as alone:
                    job.future.set_exception(alone)
                else:
                    job.future.set_result(result)
            return
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)

    def _transaction(self, jobs: list[_Job[Item, Result]]) -> list[Result]:
        now = self.clock()
        with self._connection() as connection, self.sessions(bind=connection) as session, session.begin():
            results = [self.work(session, job.item, now) for job in jobs]
            for job in jobs:
                job.wait_settled()
        self.transactions += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        return results

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        bind: Any = self.sessions.kw["bind"]
        with bind.connect() as connection:
            if connection.dialect.name != "sqlite":
                yield connection
                return
            raw = connection.connection.driver_connection
            (configured,) = raw.execute("PRAGMA synchronous").fetchone()
            raw.execute("PRAGMA synchronous=NORMAL")  # see the module's docstring
            try:
                yield connection
            finally:
                try:
                    raw.execute(f"PRAGMA synchronous={int(configured)}")
                except Exception:
                    connection.invalidate()  # never hand a relaxed connection back to the pool
                    raise
