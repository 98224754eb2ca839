"""A real FHIR R4 server for the FHIR exporter tests, started once per session.

The server is Medplum's FHIR router (@medplum/fhir-router: the REST layer of the Medplum server,
with conditional create/update/delete, FHIR search and transaction Bundles) over its in-memory
repository, validating every write against the R4 StructureDefinitions; scripts/fhir-server/
server.cjs serves it over HTTP(S) and requires a bearer token when given one. Chosen because it
installs from npm with Node 20, starts in about 1-2 s with an empty store, and is the code a
production Medplum server runs; HAPI FHIR, Blaze and the Medplum server itself are not published
to a registry this project can install from.

If the server is not installed, the fixture runs scripts/setup-fhir-server.sh once (CI starts
from nothing) and fails with the script's own words if that fails. Use it from a test module with
``pytest_plugins = ["tests.exporters.fhir_server"]``. (PYTEST_DONT_REWRITE: the module has no
asserts, and test modules import it before pytest loads it as a plugin.)
"""

from __future__ import annotations

import json
import os
import secrets
import select
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPOSITORY / "scripts" / "fhir-server" / "server.cjs"
LOCK_FILE = REPOSITORY / "scripts" / "fhir-server" / "package-lock.json"
SETUP_SCRIPT = REPOSITORY / "scripts" / "setup-fhir-server.sh"
INSTALL_DIR = Path(os.environ.get("ECHO_FHIR_SERVER_DIR", REPOSITORY / ".cache" / "fhir-server"))
START_TIMEOUT = 30.0  # seconds from spawning node to a served CapabilityStatement
SETUP_TIMEOUT = 600.0


@dataclass(frozen=True)
class FhirServer:
    """A running server: its FHIR base URL, the token it requires, and how long it took to start."""

    base_url: str
    token: str | None
    startup_seconds: float
    ca_file: Path | None = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/fhir+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _verify(self) -> bool | ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else False

    def get(self, path: str, **params: str) -> httpx.Response:
        """GET `path` under the base with the server's token (reading back what a test sent)."""
        url = f"{self.base_url}/{path}"
        return httpx.get(url, params=params, headers=self._headers(), verify=self._verify(), timeout=10)

    def post(self, path: str, resource: dict) -> httpx.Response:
        """POST a resource under the base with the server's token (setting up what a test needs)."""
        url = f"{self.base_url}/{path}"
        return httpx.post(url, json=resource, headers=self._headers(), verify=self._verify(), timeout=10)

    def search(self, resource_type: str, **params: str) -> list[dict]:
        """The resources a search finds (one page is plenty for a test)."""
        response = self.get(resource_type, **params)
        response.raise_for_status()
        return [entry["resource"] for entry in response.json().get("entry", [])]


def _installed() -> bool:
    stamp = INSTALL_DIR / "installed-lock.json"
    return stamp.is_file() and stamp.read_bytes() == LOCK_FILE.read_bytes()


def ensure_installed() -> Path:
    """The server's node_modules folder, installing it first if it is missing or out of date."""
    if not _installed():
        try:
            result = subprocess.run(
                ["bash", str(SETUP_SCRIPT)],
                capture_output=True,
                text=True,
                timeout=SETUP_TIMEOUT,
                env={**os.environ, "ECHO_FHIR_SERVER_DIR": str(INSTALL_DIR)},
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the FHIR test server was not installed within {SETUP_TIMEOUT:.0f}s ({SETUP_SCRIPT.name})"
            )
        if result.returncode != 0 or not _installed():
            said = (result.stderr or result.stdout).strip().splitlines()[-5:]
            pytest.fail(
                f"the FHIR test server could not be installed: {SETUP_SCRIPT.name} exited "
                f"{result.returncode}: {' | '.join(said) or 'no output'}"
            )
    return INSTALL_DIR / "node_modules"


@contextmanager
def running_fhir_server(
    *, token: str | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[FhirServer]:
    """Start server.cjs on a port it picks itself (no race for a 'free' port), wait until it
    serves its CapabilityStatement, stop it on exit. `tls` is (certificate, key) for https."""
    node_modules = ensure_installed()
    command = ["node", str(SERVER_SCRIPT), "--port", "0"]
    if tls is not None:
        command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    env = {**os.environ, "NODE_PATH": str(node_modules)}
    env.pop("FHIR_SERVER_TOKEN", None)
    if token is not None:
        env["FHIR_SERVER_TOKEN"] = token
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env)
        try:
            port = _announced_port(process, started, log)
            scheme = "https" if tls is not None else "http"
            server = FhirServer(
                base_url=f"{scheme}://127.0.0.1:{port}/fhir",
                token=token,
                startup_seconds=0.0,
                ca_file=tls[0] if tls is not None else None,
            )
            _wait_ready(server, process, started, log)
            yield FhirServer(
                base_url=server.base_url,
                token=token,
                startup_seconds=time.monotonic() - started,
                ca_file=server.ca_file,
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()


def _announced_port(process: subprocess.Popen, started: float, log) -> int:
    """The port from the server's one JSON line on stdout, within START_TIMEOUT."""
    remaining = START_TIMEOUT - (time.monotonic() - started)
    ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
    line = process.stdout.readline() if ready else b""
    try:
        return int(json.loads(line)["port"])
    except (ValueError, KeyError, TypeError):
        _fail_start(process, log, f"no port announced within {START_TIMEOUT:.0f}s (got {line[:200]!r})")


def _wait_ready(server: FhirServer, process: subprocess.Popen, started: float, log) -> None:
    while time.monotonic() - started < START_TIMEOUT:
        if process.poll() is not None:
            _fail_start(process, log, f"exited with {process.returncode}")
        try:
            if server.get("metadata").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    _fail_start(process, log, f"not serving /metadata within {START_TIMEOUT:.0f}s")


def _fail_start(process: subprocess.Popen, log, why: str) -> None:
    process.kill()
    process.wait()
    log.seek(0)
    said = log.read().decode("utf-8", errors="replace").strip().splitlines()[-5:]
    pytest.fail(f"the FHIR test server did not start: {why}: {' | '.join(said) or 'nothing on stderr'}")


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[FhirServer]:
    """One server for the session, requiring a bearer token; tests keep apart by study UID."""
    with running_fhir_server(token=secrets.token_urlsafe(24)) as server:
        yield server


@pytest.fixture(scope="session")
def tls_fhir_server(certificate) -> Iterator[FhirServer]:
    """The same server over https, with the session's self-signed certificate for 127.0.0.1."""
    with running_fhir_server(
        token=secrets.token_urlsafe(24), tls=(certificate.cert, certificate.key)
    ) as server:
        yield server
