"""Time limits for a worker that runs its tasks in its own process (`echo-worker --pool solo`).

Celery's prefork pool enforces a task's `soft_time_limit` and `time_limit` from the parent process;
the solo pool (the embedded node's: one process instead of a parent and a pool child, ~160 MB less)
has no parent and ignores both. This module gives them back, with the prefork pool's outcomes:

- soft: when it passes, SIGALRM is sent to the main thread (where a solo worker runs its task), and
  its handler raises SoftTimeLimitExceeded there, as billiard's signal does in a pool process: the
  task records the failure and Celery retries it;
- hard: when it passes, `task_failure` is sent with TimeLimitExceeded, as the prefork parent does
  (the inference task's receiver writes the dead letter, `worker.tasks`), and the process exits at
  once with EXIT_HARD_LIMIT; the node restarts its worker (`node.serve.embedded_worker`) and its
  reconciler takes over what the message held.

A task stuck in native code that holds the interpreter lock starves these timers; the node also
kills its worker when an attempt runs past the hard limit (`node.serve.runtime`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, task_postrun, task_prerun

log = logging.getLogger(__name__)

EXIT_HARD_LIMIT = 70  # EX_SOFTWARE: the node's log names the status it restarted the worker after


class SoloTimeLimits:
    """Arms two timers when a task starts and cancels them when it ends (one task at a time)."""

    def __init__(self, exit_process: Any = os._exit) -> None:
        self.exit_process = exit_process
        self._main = threading.main_thread().ident
        self._timers: list[threading.Timer] = []
        self._previous: Any = signal.SIG_DFL

    def install(self) -> None:
        """From the main thread, before the worker starts: the handler and the signal receivers."""
        self._previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
        task_prerun.connect(self.started, weak=False)
        task_postrun.connect(self.ended, weak=False)

    def uninstall(self) -> None:
        self.ended()
        task_prerun.disconnect(self.started)
        task_postrun.disconnect(self.ended)
        signal.signal(signal.SIGALRM, self._previous)

    def started(
        self,
        sender: Task | None = None,
        task_id: str | None = None,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        self.ended()
        if sender is None:
            return
        if sender.soft_time_limit:
            self._arm(sender.soft_time_limit, self._soft, ())
        if sender.time_limit:
            self._arm(sender.time_limit, self._hard, (sender, task_id, args or (), kwargs or {}))

    def ended(self, **_: Any) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def _arm(self, seconds: float, action: Any, args: tuple[Any, ...]) -> None:
        timer = threading.Timer(seconds, action, args)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def _soft(self) -> None:
        if self._main is not None:
            signal.pthread_kill(self._main, signal.SIGALRM)

    def _hard(self, task: Task, task_id: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        limit = task.time_limit
        log.error("task %s ran past its hard time limit of %s s; the worker exits", task.name, limit)
        try:
            task_failure.send(
                sender=task, task_id=task_id, exception=TimeLimitExceeded(limit), args=args, kwargs=kwargs
            )
        finally:
            self.exit_process(EXIT_HARD_LIMIT)


def _raise_soft_limit(_signum: int, _frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded()
