"""Where a worker's pool processes keep the figures only they know (prometheus_client's multiprocess mode).

Celery runs each task in a forked pool process; the HTTP listener runs in the worker's main process
(one port, however many pool processes). prometheus_client carries the figures across: with the
environment variable PROMETHEUS_MULTIPROC_DIR naming a folder, every process writes its values to
memory-mapped files there, and the listener sums them at scrape time (`process_figures`). The
variable must be set before prometheus_client is first imported, so this module imports none of it.

`echo-worker` uses a fresh temporary folder of its own; the embedded worker of `echo-node serve` one
under the data dir, which the serve process's listener reads (the child opens no listener of its own).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from node.config.settings import Settings

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's name for the folder
EMBEDDED_FOLDER = "worker-figures"


def embedded_worker_folder(settings: Settings) -> Path:
    """Where the embedded worker's processes write their figures (the serve process reads them)."""
    return settings.data_dir / EMBEDDED_FOLDER


def fresh_folder(folder: Path) -> Path:
    """`folder`, emptied: figures of processes from an earlier run must not be summed in."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def use_folder(folder: Path) -> None:
    """This process and the processes it forks keep their figures in `folder`.

    Raises RuntimeError when prometheus_client was imported before without the variable: its metrics
    would then stay in each process's memory, invisible to the listener."""
    if "prometheus_client.values" in sys.modules and MULTIPROCESS_ENV not in os.environ:
        raise RuntimeError("prometheus_client was imported before the worker's figures folder was set")
    os.environ[MULTIPROCESS_ENV] = str(folder)


def folder_in_use() -> Path | None:
    """The folder this process was told to write its figures to (by its parent, or `use_folder`)."""
    value = os.environ.get(MULTIPROCESS_ENV, "").strip()
    return Path(value) if value else None
