"""Processes and services that die under the node: the node killed with SIGKILL at random points
(10 times, seeded), a separate `echo-worker` killed mid-inference on Redis + PostgreSQL, a Redis of
the test's own restarted empty while studies flow, PostgreSQL dropping the node's connections.

The database is the source of truth: after each fault the node finds what was in flight and
finishes it. Every scenario ends with its ledger (sent, rows, SR, ORU, lost, duplicated)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from node.config.settings import load_settings
from node.store.database import Database, open_database
from node.store.states import StudyState
from tests.e2e.conftest import POSTGRES_ADMIN, REPOSITORY
from tests.faults.site import Ledger, StudyStates, chest_study, send, settle

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

HOLD_WORKER = REPOSITORY / "tests" / "e2e" / "hold_worker.py"
RECOVERY = {  # fast recovery for the test: republish after 3 s, a silent job is dead after 5 s
    "ECHO_REQUEUE_AFTER_SECONDS": "3",
    "ECHO_HEARTBEAT_TIMEOUT_SECONDS": "5",
}


@dataclass
class Group:
    """A process started in a session of its own, so SIGKILL reaches it and every child it made."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Group:
        with self.log.open("ab") as handle:
            handle.write(f"\n===== start {self.name} =====\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=REPOSITORY,
                env={**os.environ, **self.env},
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


@dataclass
class Site(StudyStates):
    port: int
    database: Database
    groups: list[Group] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def node(self) -> Group:
        return self.groups[0]

    def worker(self, name: str, script: list[str] | None = None) -> Group:
        """An `echo-worker` on both queues, one process (not started); `script` replaces `-m worker.cli`."""
        assert self.folder is not None
        slug = name.replace(" ", "-")
        args = [*(script or ["-m", "worker.cli"]), "--queues", "gpu,io", "--concurrency", "1"]
        group = Group(
            name, [*args, "--name", f"{slug}-{self.port}@%h"], self.env, self.folder / f"{slug}.log"
        )
        self.groups.append(group)
        return group

    def logs(self) -> str:
        return "\n".join(
            f"--- {group.name} ---\n{group.log.read_text(errors='replace')[-5000:]}" for group in self.groups
        )


def _ready(site: Site, dcmtk, wait) -> None:
    echo = ("/usr/bin/echoscu", "-to", "5", "-aet", "ECHODEMO", "-aec", "ECHO", "127.0.0.1", str(site.port))
    wait(lambda: dcmtk(*echo).returncode == 0, 90, "the node's SCP", site.logs)


def _settle(site: Site, ledger: Ledger, pacs, ris, wait, timeout_s: float = 120):
    return settle(site, ledger, pacs, ris, wait, site.logs, timeout_s)


def _send_one(site: Site, ledger: Ledger, prefix: str) -> None:
    study = chest_study(prefix)
    if send(site.port, [study]) == [0]:
        ledger.sent_ok(study)


@pytest.fixture
def database_url() -> Iterator[str]:
    name = f"echo_faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def production_site(
    tmp_path: Path, pacs, ris, model_dir, environment, free_ports, database_url
) -> Iterator[Callable[..., Site]]:
    """build(broker_url, **env): `echo-node serve` on PostgreSQL and that broker (not started), with
    fast recovery; add workers with `site.worker(...)`. Everything started is stopped at the end."""
    built: list[Site] = []

    def build(broker_url: str, **extra_env: str) -> Site:
        port = free_ports()
        env = {
            **environment(
                tmp_path / "node",
                port,
                model_dir,
                pacs=pacs.address,
                ris=ris.address,
                database_url=database_url,
                broker_url=broker_url,
            ),
            **RECOVERY,
            **extra_env,
        }
        node = Group("serve", ["-m", "node.serve.cli", "serve"], env, tmp_path / "serve.log")
        database = open_database(load_settings(data_dir=tmp_path / "node", database_url=database_url))
        site = Site(port, database, [node], env, tmp_path)
        built.append(site)
        return site

    yield build
    for site in built:
        for group in reversed(site.groups):
            group.stop()
        site.database.dispose()


def test_the_node_killed_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, pacs, ris, model_dir, environment, free_ports, dcmtk, wait
) -> None:
    ledger = Ledger("node SIGKILLed at random points x10")
    rng = random.Random(20261202)
    port = free_ports()
    env = {**environment(tmp_path / "node", port, model_dir, pacs=pacs.address, ris=ris.address), **RECOVERY}
    node = Group("serve", ["-m", "node.serve.cli", "serve"], env, tmp_path / "serve.log")
    site = Site(port, open_database(load_settings(data_dir=tmp_path / "node")), [node])
    try:
        for iteration in range(10):
            node.start()
            _ready(site, dcmtk, wait)
            for _ in range(2):
                _send_one(site, ledger, f"KILL{iteration}")
            time.sleep(rng.uniform(0.0, 2.5))  # before assembly, in inference or in delivery
            node.kill()
        node.start()
        row = _settle(site, ledger, pacs, ris, wait, timeout_s=180)
        assert set(site.states(ledger.sent).values()) == {StudyState.DELIVERED}, site.logs()
        assert (row.sent, row.rows, row.lost, row.duplicated) == (20, 20, 0, 0)
    finally:
        node.stop()
        site.database.dispose()


def test_a_worker_killed_mid_inference_on_redis_and_postgresql_is_recovered(
    tmp_path: Path, pacs, ris, dcmtk, wait, production_site, redis_url
) -> None:
    ledger = Ledger("echo-worker SIGKILLed mid-inference (Redis, PostgreSQL)")
    hold = tmp_path / "hold"
    hold.mkdir()
    site = production_site(redis_url, ECHO_TEST_HOLD_DIR=str(hold))
    held_worker = site.worker("held worker", [str(HOLD_WORKER)])
    fresh_worker = site.worker("fresh worker")
    site.node.start()
    held_worker.start()
    _ready(site, dcmtk, wait)
    (hold / "hold").write_text("")
    _send_one(site, ledger, "WKILL")
    wait(lambda: (hold / "held.pid").is_file(), 60, "the inference to be held", site.logs)
    held_worker.kill()  # the worker's main process and its pool child, mid-inference
    _send_one(site, ledger, "WKILL")
    fresh_worker.start()
    row = _settle(site, ledger, pacs, ris, wait)
    assert set(site.states(ledger.sent).values()) == {StudyState.DELIVERED}, site.logs()
    assert (row.sent, row.rows, row.sr, row.oru, row.lost, row.duplicated) == (2, 2, 2, 2, 0, 0)


@pytest.fixture
def own_redis(free_ports, tmp_path: Path) -> Iterator[tuple[int, Group]]:
    port = free_ports()

    class Redis(Group):
        def start(self) -> Group:
            with self.log.open("ab") as handle:
                self.process = subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                probe = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
                if probe.stdout.strip() == "PONG":
                    return self
                time.sleep(0.1)
            raise AssertionError("redis-server did not start")

    server = Redis("redis", [], {}, tmp_path / "redis.log").start()
    yield port, server
    server.kill()


def test_a_redis_restarted_empty_while_studies_flow_loses_nothing(
    pacs, ris, dcmtk, wait, production_site, own_redis
) -> None:
    ledger = Ledger("Redis restarted empty while studies flow")
    redis_port, redis_server = own_redis
    site = production_site(f"redis://127.0.0.1:{redis_port}/0")
    site.groups.append(redis_server)
    worker = site.worker("worker")
    site.node.start()
    _ready(site, dcmtk, wait)
    for _ in range(3):  # queued while no worker runs: the messages wait in Redis
        _send_one(site, ledger, "REDIS")
    wait(lambda: set(site.states(ledger.sent).values()) == {StudyState.QUEUED}, 30, "queued", site.logs)
    redis_server.kill()  # and with it every message it held
    redis_server.start()
    worker.start()
    for _ in range(3):
        _send_one(site, ledger, "REDIS")
    row = _settle(site, ledger, pacs, ris, wait)
    assert set(site.states(ledger.sent).values()) == {StudyState.DELIVERED}, site.logs()
    assert (row.sent, row.rows, row.sr, row.oru, row.lost, row.duplicated) == (6, 6, 6, 6, 0, 0)


def test_postgresql_dropping_the_nodes_connections_loses_nothing(
    pacs, ris, dcmtk, wait, production_site, database_url, redis_url
) -> None:
    ledger = Ledger("PostgreSQL drops every connection, twice")
    site = production_site(redis_url)
    worker = site.worker("worker")
    name = database_url.rsplit("/", 1)[1]

    def drop_connections() -> None:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    site.node.start()
    worker.start()
    _ready(site, dcmtk, wait)
    for round_ in range(2):
        for _ in range(3):
            _send_one(site, ledger, f"PGDROP{round_}")
        time.sleep(0.7)
        drop_connections()
    for _ in range(2):  # and the node still takes studies afterwards
        _send_one(site, ledger, "PGAFTER")
    row = _settle(site, ledger, pacs, ris, wait)
    assert set(site.states(ledger.sent).values()) == {StudyState.DELIVERED}, site.logs()
    assert row.sent >= 6, "most sends were answered success"
    assert (row.lost, row.duplicated) == (0, 0)
    assert row.rows == row.sent
