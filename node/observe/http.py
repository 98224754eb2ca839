"""One small HTTP listener per process: /metrics (Prometheus text), /healthz and /readyz.

- `/healthz` (liveness): 200 while the process serves HTTP at all; a probe that fails restarts it.
- `/readyz` (readiness): 200 only when every check passes (database, broker, model, disk), else 503
  with the failing checks named, one per line: a load balancer or orchestrator stops routing work.
- `/metrics`: the `NodeCollector`'s figures in the Prometheus text format.

Bound to 127.0.0.1 by default: the figures are aggregates without patient data, but a site decides
who may read them (a reverse proxy, or ECHO_HTTP on another address).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None: fine; else a one-line reason it is not


@dataclass
class Probes:
    registry: CollectorRegistry
    checks: dict[str, Check]

    def readiness(self) -> list[str]:
        """The failing checks as 'name: reason' lines; a check that raises fails with its error."""
        failing = []
        for name, check in self.checks.items():
            try:
                reason = check()
            except Exception as error:  # noqa: BLE001 - a probe reports, it never crashes the listener
                reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            if reason is not None:
                failing.append(f"{name}: {reason}")
        return failing


def registry_with(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class ObserveServer:
    """The listener on its own daemon thread; `stop()` closes it."""

    def __init__(self, host: str, port: int, probes: Probes):
        handler = type("Handler", (_Handler,), {"probes": probes})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> ObserveServer:
        self._thread.start()
        log.info("HTTP /metrics /healthz /readyz on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    probes: Probes
    server_version = "echo-node"

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._reply(HTTPStatus.OK, b"ok\n")
        elif path == "/readyz":
            failing = self.probes.readiness()
            body = ("\n".join(failing) if failing else "ready") + "\n"
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE if failing else HTTPStatus.OK, body.encode())
        elif path == "/metrics":
            try:
                body = generate_latest(self.probes.registry)
            except Exception as error:  # noqa: BLE001 - the database is down: say so, keep serving
                log.warning("metrics unavailable: %s", type(error).__name__)
                self._reply(
                    HTTPStatus.SERVICE_UNAVAILABLE, f"metrics unavailable: {type(error).__name__}\n".encode()
                )
                return
            self._reply(HTTPStatus.OK, body, CONTENT_TYPE_LATEST)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found: /metrics, /healthz, /readyz\n")

    def _reply(
        self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        log.debug("http: " + format, *args)
