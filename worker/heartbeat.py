"""A running job's heartbeat (`jobs.heartbeat_at`), by which the node's reconciler
(`node.store.reconcile`) tells a live attempt from one whose process died."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from node.store.models import Job
from node.store.states import JobState

log = logging.getLogger(__name__)


class Heartbeat:
    """Refreshes a running job's `heartbeat_at` every `interval_s` from a thread of its own, so it
    beats while the engine holds the task's thread; a failed beat is logged and tried again."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: int, interval_s: float, clock: Callable[[], datetime]
    ) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"echo-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.sessions.begin() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == self.job_id, Job.state == JobState.RUNNING)
                        .values(heartbeat_at=self.clock())
                    )
            except Exception as error:  # the database is away: the next beat tries again
                log.warning("heartbeat of job %d not recorded (%s)", self.job_id, type(error).__name__)
