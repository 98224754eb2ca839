"""Receivers of `benchmarks/ingest.py` that run in one process per core, all on one port.

Each process binds the port with ``SO_REUSEPORT``: the kernel deals each association to one of them
by a hash of its addresses, so 4 associations may land 2 / 2, 3 / 1 or 4 / 0. Each process runs its
own interpreter, so the associations stop sharing one interpreter lock. Two of them:

- `PynetdicomProcesses` (in ingest.py): the node's SCP stack keeping nothing, the most any
  multi-process receiver behind pynetdicom could reach;
- `NodeProcesses`: the node's own SCP and ingest in each process (streamed files renamed into one
  spool and fsynced before success, the rows group-committed into one shared database), what a node
  that received in several processes would reach. Study assembly, the outbox and the worker do not
  run (the in-process `node` receiver runs assembly with a 10 s quiet period: it never fires during a
  run either).

The children are forked: they start at once and inherit the imports.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e_peers import free_port
from sqlalchemy import Engine, func, select

from node.config.settings import Settings, load_settings
from node.dicom.association_log import AssociationLog
from node.dicom.ingest import Ingestor
from node.dicom.scp import start_scp
from node.dicom.server import EchoAssociationServer
from node.dicom.spool import Spool
from node.store.database import open_database
from node.store.models import Instance

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU of a running process, all its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def bind_port_shared() -> None:
    """From now on, in this (forked) process, every ECHO server binds its port with SO_REUSEPORT."""
    bind = EchoAssociationServer.server_bind

    def bind_shared(server: EchoAssociationServer) -> None:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bind(server)

    EchoAssociationServer.server_bind = bind_shared  # type: ignore[method-assign]


def _serve_until_terminated(serve: Callable[..., object], args: tuple[Any, ...], ready: Any) -> None:
    """In a forked child: `serve(*args)` on a shared port, then wait for SIGTERM."""
    bind_port_shared()
    serve(*args)
    ready.set()
    threading.Event().wait()


class SharedPortProcesses:
    """`processes` forked children, child i running `self.serve(work / f"p{i}", port)` on the one
    shared port until `stop`."""

    ae_title = "ECHO"

    def __init__(self, name: str, processes: int) -> None:
        self.processes = processes
        self.name = f"{name} x{processes}"
        self.forked = multiprocessing.get_context("fork")
        self.children: list[Any] = []

    def serve(self, work: Path, port: int) -> object:  # runs in each child
        raise NotImplementedError

    def start(self, work: Path) -> int:
        port = free_port()
        self.before_start(work, port)
        ready = [self.forked.Event() for _ in range(self.processes)]
        self.children = [
            self.forked.Process(
                target=_serve_until_terminated, args=(self.serve, (work / f"p{i}", port), up), daemon=True
            )
            for i, up in enumerate(ready)
        ]
        for child in self.children:
            child.start()
        if not all(up.wait(60) for up in ready):
            raise SystemExit(f"{self.name}: a process did not start listening on port {port}")
        return port

    def before_start(self, work: Path, port: int) -> None:
        """In this process, before the children fork."""

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(child.pid) for child in self.children)

    def stop(self) -> None:
        for child in self.children:
            child.terminate()
            child.join(30)
        self.children = []


class NodeProcesses(SharedPortProcesses):
    """The node's SCP and ingest in each process: one spool, one database (see the module)."""

    def __init__(self, database_url: str, processes: int = os.cpu_count() or 2) -> None:
        super().__init__("node", processes)
        self.database_url = database_url
        self.settings: Settings | None = None

    def before_start(self, work: Path, port: int) -> None:
        from node.store.database import migrate  # alembic: only here

        self.settings = load_settings(
            data_dir=work / "node", port=port, database_url=self.database_url, log_level="WARNING", http=""
        )
        database = open_database(self.settings)
        try:
            migrate(database.engine)
        finally:
            database.dispose()  # the children open their own connections

    def serve(self, work: Path, port: int) -> object:
        assert self.settings is not None
        database = open_database(self.settings)
        ingestor = Ingestor(database.sessions, Spool(self.settings.spool_dir))
        return start_scp(self.settings, ingestor, AssociationLog(database.sessions), "127.0.0.1")

    def count(self) -> int:
        assert self.settings is not None
        database = open_database(self.settings)
        try:
            with database.sessions() as session:
                return session.scalar(select(func.count()).select_from(Instance)) or 0
        finally:
            database.dispose()

    def stop(self) -> None:
        super().stop()
        if self.settings is not None and self.database_url:  # leave a PostgreSQL database as we found it
            database = open_database(self.settings)
            try:
                clear_node_tables(database.engine)
            finally:
                database.dispose()
        self.settings = None


def clear_node_tables(engine: Engine) -> None:
    """Delete what a run stored in the node's tables."""
    with engine.begin() as connection:
        for table in ("instances", "study_events", "studies", "associations"):
            connection.exec_driver_sql(f"DELETE FROM {table}")
