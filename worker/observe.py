"""`echo-worker`'s own monitoring listener on ECHO_WORKER_HTTP, in the worker's main process.

- `/readyz`: database, broker, a model the worker can serve (`node.observe.checks.served_model`),
  the spool's disk;
- `/metrics`: the node's figures (database, queue depths) and the worker's own (`worker.figures`),
  which its pool processes write to a folder of their own (`node.observe.figures_folder`): a fresh
  temporary one, removed when the worker stops.

The embedded worker of `echo-node serve` opens none: its parent sets ECHO_WORKER_HTTP off and names
the folder, whose figures the serve process's listener (ECHO_HTTP) serves with its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from node.config.settings import Settings
from node.observe.figures_folder import folder_in_use, use_folder

if TYPE_CHECKING:  # imported at run time only after the figures folder is set
    from node.observe.http import ObserveServer


@contextmanager
def worker_listener(settings: Settings) -> Iterator[ObserveServer | None]:
    """The listener while the worker runs (None when ECHO_WORKER_HTTP is off or its port is taken).

    Enter it before the worker starts its pool: the figures folder must be set before the pool
    processes are forked and before prometheus_client is imported."""
    folder, own = folder_in_use(), None
    if folder is None and settings.worker_http is not None:
        folder = own = Path(tempfile.mkdtemp(prefix="echo-worker-figures-"))
        use_folder(folder)
    try:
        if settings.worker_http is None:
            yield None
            return
        from node.observe.http import ObserveServer  # prometheus_client: after use_folder
        from node.observe.listener import node_probes, start_listener
        from node.store.database import open_database

        database = open_database(settings)
        # Pool processes are forked from this one: they must not reuse its pooled connections.
        os.register_at_fork(after_in_child=lambda: database.engine.dispose(close=False))
        probes = node_probes(settings, database.sessions, serves_model=True, process_figures=folder)
        server = start_listener(
            settings.worker_http, "ECHO_WORKER_HTTP", lambda host, port: ObserveServer(host, port, probes)
        )
        try:
            yield server
        finally:
            if server is not None:
                server.stop()
            database.dispose()
    finally:
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
