"""The retention loop of a running node: ECHO_RETENTION_DAYS applied every hour (`node.store.retention`).

`Node.start` adds it with one line, next to its other loops::

    self._loops.extend(retention_loops(settings, database.sessions))
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from node.config.settings import Settings
from node.serve.loops import PeriodicLoop
from node.store.retention import RETENTION_INTERVAL_S, retention_tick


def retention_loops(
    settings: Settings, sessions: sessionmaker[Session], interval_s: float = RETENTION_INTERVAL_S
) -> list[PeriodicLoop]:
    """One loop when ECHO_RETENTION_DAYS is set (its first pass runs at start), none when it is unset."""
    tick = retention_tick(settings, sessions)
    return [] if tick is None else [PeriodicLoop("retention", interval_s, tick)]
