"""The figures a worker's pool processes wrote to their folder (`figures_folder`), summed at scrape time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

_LIVE_GAUGES = "gauge_live*_*.db"  # files of gauges that count only while their process runs


class ProcessFigures(Collector):
    """Every process's figures in `folder`, summed; gauges of processes that died are dropped first
    (a pool process killed at the hard time limit never says it is gone)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        if not self.folder.is_dir():  # no worker has started yet
            return
        for pid in dead_processes(self.folder):
            mark_process_dead(pid, str(self.folder))
        yield from MultiProcessCollector(None, str(self.folder)).collect()


def dead_processes(folder: Path) -> set[int]:
    """The processes with live-gauge files in `folder` that no longer run."""
    dead = set()
    for path in folder.glob(_LIVE_GAUGES):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and not _running(int(pid)):
            dead.add(int(pid))
    return dead


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True
