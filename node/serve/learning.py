"""The learning loop of a running node: signed reports matched to studies that have since arrived,
and drafts scored against them (`node.learning.scoring.learning_tick`), every few seconds.

`Node.start` adds it next to its other loops. One batch per tick keeps a tick short after a bulk
import; the rest follows on the next ticks (`echo-admin quality` also catches up before it prints).
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from node.learning.scoring import learning_tick
from node.serve.loops import PeriodicLoop

LEARNING_INTERVAL_S = 5.0


def learning_loops(
    sessions: sessionmaker[Session], interval_s: float = LEARNING_INTERVAL_S
) -> list[PeriodicLoop]:
    return [PeriodicLoop("learning", interval_s, lambda: learning_tick(sessions, max_batches=1))]
