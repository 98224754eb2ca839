"""/readyz and /metrics against a real Redis broker that stops and comes back.

The Redis is a private redis-server on a free port, started by the test: the shared one on 6379 is
never stopped. The probes are the ones `echo-node serve` and `echo-worker` build (`node_probes`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from node.broker.app import INFER_STUDY, create_app
from node.config.settings import Settings, load_settings
from node.observe.http import ObserveServer
from node.observe.listener import node_probes
from tests.node.observe.test_metrics import samples


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """redis-server on `port`, no persistence; stop() and start() again on the same port."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, private_redis: PrivateRedis) -> Settings:
    (tmp_path / "data" / "spool").mkdir(parents=True)
    return load_settings(data_dir=tmp_path / "data", broker_url=f"redis://127.0.0.1:{private_redis.port}/0")


@pytest.fixture
def listener(settings: Settings, sqlite_db) -> Iterator[ObserveServer]:
    probes = node_probes(settings, sqlite_db.sessions, serves_model=True)
    server = ObserveServer("127.0.0.1", 0, probes).start()
    yield server
    server.stop()


def get(server: ObserveServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.integration
def test_readyz_names_the_broker_while_it_is_down_and_is_green_when_it_is_back(
    listener: ObserveServer, private_redis: PrivateRedis
) -> None:
    assert get(listener, "/readyz") == (200, "ready\n")

    private_redis.stop()
    status, body = get(listener, "/readyz")
    assert status == 503
    assert body.splitlines() == [body.splitlines()[0]], "only the broker fails"
    assert body.startswith(
        f"broker: ECHO_BROKER_URL: the broker at redis://127.0.0.1:{private_redis.port}/0 does not answer"
    ), body

    private_redis.start()
    assert get(listener, "/readyz") == (200, "ready\n")


@pytest.mark.integration
def test_metrics_read_queue_depths_from_redis_and_say_when_it_is_down(
    listener: ObserveServer, private_redis: PrivateRedis, settings: Settings
) -> None:
    with create_app(settings).connection_for_write() as connection:
        create_app(settings).send_task(INFER_STUDY, args=[1], connection=connection)
    status, body = get(listener, "/metrics")
    found = samples(body)
    assert status == 200
    assert found[("echo_broker_up", ())] == 1
    assert found[("echo_queue_messages", (("queue", "gpu"),))] == 1
    assert found[("echo_queue_messages", (("queue", "io"),))] == 0
    assert found[("echo_queue_messages", (("queue", "train"),))] == 0

    private_redis.stop()
    status, body = get(listener, "/metrics")
    found = samples(body)
    assert status == 200, "the database's figures are served without the broker"
    assert found[("echo_broker_up", ())] == 0
    assert not any(name == "echo_queue_messages" for name, _ in found)
    assert found[("echo_studies", (("state", "queued"),))] == 0
