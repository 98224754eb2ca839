"""Fixtures for the HL7 listener: listeners on loopback over SQLite or PostgreSQL, a TLS certificate.

The node's fixtures (`sqlite_db`, `postgres_url`, `wait_for`) come from tests/node/conftest.py; the
RIS side (messages, sending, a kept-open connection) is the simulator in `tests.node.hl7.ris`.
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.config.settings import load_settings
from node.hl7.ack import OwnNames
from node.hl7.listener import Hl7Listener, ListenerLimits
from node.hl7.receiver import FacilityPolicy, Receiver
from node.store.database import Database, migrate, open_database


@pytest.fixture
def start_listener() -> Iterator[Callable[..., Hl7Listener]]:
    """start_listener(database, facilities=(), tls=None, **limits): serving on 127.0.0.1, a free port."""
    listeners: list[Hl7Listener] = []

    def start(
        database: Database,
        facilities: tuple[str, ...] = (),
        tls: ssl.SSLContext | None = None,
        **limits: float,
    ) -> Hl7Listener:
        receiver = Receiver(database.sessions, FacilityPolicy(facilities), OwnNames("ECHO", "ECHOSITE"))
        listener = Hl7Listener(receiver, ("127.0.0.1", 0), tls=tls, limits=ListenerLimits(**limits))
        listener.start()
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.stop(grace_s=1.0)


@pytest.fixture(scope="module")
def pg_database(postgres_url: str) -> Iterator[Database]:
    """The session's PostgreSQL database, migrated; rows of earlier tests stay (tests use own keys)."""
    database = open_database(load_settings(database_url=postgres_url))
    migrate(database.engine)
    yield database
    database.dispose()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.cert))

    def server(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed EC certificate for 127.0.0.1 (openssl command line)."""
    folder = tmp_path_factory.mktemp("hl7-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)
