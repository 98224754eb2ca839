"""What a process's monitoring listener serves, and how it starts: shared by `echo-node serve`
(ECHO_HTTP) and `echo-worker` (ECHO_WORKER_HTTP).

Every listener serves the node's figures from the database and the broker's queue depths; a
worker's adds what only its pool processes know (`process_figures`). The database-backed figures
are the same from every listener: aggregate them across targets with max(), not sum().

A port that cannot be bound is logged and the process runs on without it: monitoring must never
stop a node from taking studies or a worker from drafting them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from node.config.settings import MllpPeer, Settings
from node.observe import checks
from node.observe.http import ObserveServer, Probes, registry_with
from node.observe.metrics import NodeCollector
from node.observe.process_figures import ProcessFigures
from node.observe.queues import QueueCollector

log = logging.getLogger(__name__)


def node_probes(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    serves_model: bool,
    process_figures: Path | None = None,
) -> Probes:
    """The figures and readiness checks of a process that reads this node's database and broker.

    `serves_model`: the process drafts (a worker, or serve with its embedded worker), so readiness
    needs a model it can serve. `process_figures`: the folder its worker's pool processes write to."""
    collectors: list[Collector] = [NodeCollector(sessions, settings.spool_dir), QueueCollector(settings)]
    if process_figures is not None:
        collectors.append(ProcessFigures(process_figures))
    readiness = {"database": checks.database(sessions), "broker": checks.broker(settings)}
    if serves_model:
        readiness["model"] = checks.served_model(sessions, settings)
    readiness["disk"] = checks.disk(settings.spool_dir, settings.min_free_mb)
    return Probes(registry_with(*collectors), readiness)


def start_listener(
    address: MllpPeer, setting: str, server: Callable[[str, int], ObserveServer]
) -> ObserveServer | None:
    """`server(host, port)` started on `address` (the value of `setting`); None when the port is taken."""
    try:
        return server(address.host, address.port).start()
    except OSError as error:
        log.error(
            "no /metrics, /healthz or /readyz: cannot listen on %s (%s): %s",
            address,
            setting,
            error.strerror or error,
        )
        return None
