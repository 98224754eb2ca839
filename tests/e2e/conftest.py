"""Fixtures for end-to-end runs: the model, the site's peers, the node's services and its processes.

- `model_dir`: the bundled demo model when it exists, else a tiny random student exported once
  per test session (shared with tests/runtime under pytest's session folder);
- `pacs`: a pynetdicom storage SCP that keeps what it receives (and can be down, then up);
- `ris`: a threaded MLLP server answering each ORU from a script (AA, AE, AR or silence), parsing
  what it receives with python-hl7, a second HL7 library beside our hl7apy;
- `postgres_url`, `redis_url`: a fresh PostgreSQL database per module, Redis database 11 (ours:
  emptied before and after each module that uses it);
- `launch`: `echo-node serve` / `echo-worker` as subprocesses, stopped (SIGTERM, then SIGKILL) at
  the end of the module, their output in log files that failing assertions quote.

Processes start once per module (a start costs seconds); peers are emptied for each test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hl7
import psycopg
import pytest
import redis
from pydicom import Dataset
from pydicom.uid import Comprehensive3DSRStorage
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from node.config.settings import bundled_model_dir

REPOSITORY = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/11"  # the e2e tests' own database (benchmarks/e2e.py uses 10)
CALLING_AE = "STORESCU"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    condition: Callable[[], object], timeout_s: float, what: str, logs: Callable[[], str] = str
) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs()}")


@pytest.fixture(scope="session")
def wait() -> Callable[..., object]:
    """wait(condition, timeout_s, what, logs=callable): poll until truthy, else fail with the logs."""
    return wait_until


# --- the model ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir(request: pytest.FixtureRequest) -> Path:
    bundled = bundled_model_dir()
    if (bundled / "manifest.json").is_file():
        return bundled
    return request.getfixturevalue("tiny_random_export")[1]


# --- PACS -----------------------------------------------------------------------------------------


@dataclass
class SitePacs:
    """A storage SCP on a fixed loopback port; `start()` / `stop()` bring it up and down.

    `received`: the narrative SRs (TID 2000); `air`: the AI Results SRs (TID 1500), which the node
    sends beside each narrative one by default (ECHO_SR_TEMPLATES)."""

    port: int
    ae_title: str = "PACS"
    received: list[Dataset] = field(default_factory=list)
    air: list[Dataset] = field(default_factory=list)
    associations: int = 0
    _server: ThreadedAssociationServer | None = None

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def on_store(self, event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        (self.air if dataset.SOPClassUID == Comprehensive3DSRStorage else self.received).append(dataset)
        return 0x0000

    def on_established(self, event: evt.Event) -> None:
        self.associations += 1

    def start(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = StoragePresentationContexts
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self.on_store), (evt.EVT_ESTABLISHED, self.on_established)],
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@pytest.fixture(scope="module")
def _module_pacs() -> Iterator[SitePacs]:
    server = SitePacs(port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pacs(_module_pacs: SitePacs) -> SitePacs:
    """A PACS that is up and has received nothing yet; `stop()` / `start()` take it down and back.

    One server per module (a module's node keeps its address); emptied for each test."""
    if not _module_pacs.up:  # a test that took it down and failed before bringing it back
        _module_pacs.start()
    _module_pacs.received.clear()
    _module_pacs.air.clear()
    _module_pacs.associations = 0
    return _module_pacs


# --- RIS ------------------------------------------------------------------------------------------


def ack_for(message: hl7.Message, code: str, text: str = "") -> bytes:
    control_id = str(message.segment("MSH")[10])
    segments = [
        f"MSH|^~\\&|RIS|HOSP|ECHO|HOSP|{time.strftime('%Y%m%d%H%M%S')}||ACK^R01^ACK|A{control_id[:19]}|P|2.5.1",
        f"MSA|{code}|{control_id}|{text}",
    ]
    return b"\x0b" + "\r".join(segments).encode() + b"\r\x1c\r"


@dataclass
class SiteRis:
    """Answers the n-th ORU with script[n] ("AA", "AE", "AR" or "silent"; the last one repeats)."""

    port: int = 0
    script: list[str] = field(default_factory=lambda: ["AA"])
    received: list[hl7.Message] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, payload: bytes) -> bytes | None:
        text = payload.decode("utf-8")
        message = hl7.parse(text)
        with self._lock:
            self.raw.append(text)
            self.received.append(message)
            code = self.script[min(len(self.received), len(self.script)) - 1]
        if code == "silent":
            return None
        return ack_for(message, code, {"AE": "busy, try later", "AR": "unknown order"}.get(code, ""))


def _start_ris(ris: SiteRis, port: int = 0) -> socketserver.ThreadingTCPServer:
    """Serve `ris` on `port` (0: any free port), in a thread; shutdown() and server_close() stop it."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            connection = self.request
            connection.settimeout(10)
            buffer = b""
            try:
                while b"\x1c\r" not in buffer:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                reply = ris.answer(buffer[buffer.index(b"\x0b") + 1 : buffer.index(b"\x1c\r")])
                if reply is not None:
                    connection.sendall(reply)
                while connection.recv(65536):  # hold the line (silently) until the client hangs up
                    pass
            except OSError:
                pass

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ris.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def _module_ris() -> Iterator[SiteRis]:
    fake = SiteRis()
    server = _start_ris(fake)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def ris(_module_ris: SiteRis) -> SiteRis:
    """A RIS answering AA to everything, having received nothing yet (set `script` to change that)."""
    with _module_ris._lock:
        _module_ris.script = ["AA"]
        _module_ris.received.clear()
        _module_ris.raw.clear()
    return _module_ris


# --- services -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    name = f"echo_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Launched:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


@dataclass
class Launcher:
    folder: Path
    running: list[Launched] = field(default_factory=list)

    def __call__(self, name: str, args: list[str], env: dict[str, str]) -> Launched:
        log = self.folder / f"{name}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPOSITORY,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        launched = Launched(name, process, log)
        self.running.append(launched)
        return launched

    def logs(self) -> str:
        return "\n".join(f"--- {item.name} ---\n{item.output()[-6000:]}" for item in self.running)

    def stop_all(self) -> None:
        for item in reversed(self.running):
            if item.process.poll() is None:
                item.process.send_signal(signal.SIGTERM)
        for item in reversed(self.running):
            try:
                item.process.wait(30)
            except subprocess.TimeoutExpired:
                item.process.kill()
                item.process.wait()


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Start processes for the module; all are stopped when the module's tests are done."""
    launcher = Launcher(tmp_path_factory.mktemp("logs"))
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="session")
def dcmtk() -> Callable[..., subprocess.CompletedProcess[str]]:
    for tool in ("storescu", "echoscu", "dciodvfy", "dsrdump"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian packages dcmtk and dicom3tools)")

    def run(tool: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout_s, check=False)

    return run


def node_environment(
    data_dir: Path,
    port: int,
    model_dir: Path,
    *,
    pacs: str | None = None,
    ris: str | None = None,
    database_url: str | None = None,
    broker_url: str | None = None,
) -> dict[str, str]:
    """ECHO_* variables for a node and its workers: fast quiet period, short delivery waits."""
    env = {
        "ECHO_DATA_DIR": str(data_dir),
        "ECHO_PORT": str(port),
        "ECHO_QUIET_SECONDS": "0.5",
        "ECHO_ALLOWED_CALLERS": f"{CALLING_AE},ECHODEMO",
        "ECHO_MODEL_DIR": str(model_dir),
        "ECHO_DELIVERY_BACKOFF_SECONDS": "0.2",
        "ECHO_DELIVERY_TIMEOUT_SECONDS": "3",
        "ECHO_LOG_LEVEL": "INFO",
        "ECHO_PACS": pacs or "",
        "ECHO_RIS": ris or "",
        "ECHO_HTTP": f"127.0.0.1:{free_port()}",  # /metrics, /healthz, /readyz
        "ECHO_WORKER_HTTP": f"127.0.0.1:{free_port()}",  # an echo-worker's own listener
    }
    if database_url:
        env["ECHO_DATABASE_URL"] = database_url
    if broker_url:
        env["ECHO_BROKER_URL"] = broker_url
    return env


@pytest.fixture(scope="session")
def environment() -> Callable[..., dict[str, str]]:
    return node_environment


@pytest.fixture(scope="session")
def free_ports() -> Callable[[], int]:
    return free_port
