"""Background loops: a function called every few seconds in its own thread until the node stops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicLoop:
    def __init__(self, name: str, interval_s: float, tick: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"echo-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a failed tick is logged and retried next time; the loop must not die
                log.exception("%s loop failed; retrying in %.1f s", self.name, self.interval_s)
            self._stop.wait(self.interval_s)
