"""One small HTTP listener per process: /metrics (Prometheus text), /healthz and /readyz.

- `/healthz` (liveness): 200 while the process serves HTTP at all; a probe that fails restarts it.
- `/readyz` (readiness): 200 only when every check passes (database, broker, model, disk), else 503
  with the failing checks named, one per line: a load balancer or orchestrator stops routing work.
- `/metrics`: the `NodeCollector`'s figures in the Prometheus text format.
- `/status` (when given a `StatusRoute`): the operator's HTML page (`status_page`), guarded by
  `status_access` (a bearer token, or a loopback listener); never cached, no script runs in it.

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
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from node.observe.status_access import StatusAccess, hide_token

if TYPE_CHECKING:  # the page (Jinja2, pygal, the queries) is loaded by whoever serves it
    from node.observe.status_page import StatusPage

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


@dataclass(frozen=True)
class StatusRoute:
    page: StatusPage
    access: StatusAccess


# The page holds no script and loads nothing: the policy stops anything that would (pygal's inline
# settings block included); no-store keeps it out of shared caches, no-referrer keeps ?token= home.
STATUS_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def registry_with(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class ObserveServer:
    """The listener on its own daemon thread; `stop()` closes it."""

    def __init__(self, host: str, port: int, probes: Probes, status: StatusRoute | None = None):
        self._paths = "/metrics /healthz /readyz" + (" /status" if status is not None else "")
        handler = type("Handler", (_Handler,), {"probes": probes, "status": status})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="echo-http", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> ObserveServer:
        self._thread.start()
        log.info("HTTP %s on port %d", self._paths, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    probes: Probes
    status: StatusRoute | None
    server_version = "echo-node"

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        path, _, query = self.path.partition("?")
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
        elif path == "/status" and self.status is not None:
            self._status_page(query)
        else:
            paths = "/metrics, /healthz, /readyz" + (", /status" if self.status is not None else "")
            self._reply(HTTPStatus.NOT_FOUND, f"not found: {paths}\n".encode())

    def _status_page(self, query: str) -> None:
        assert self.status is not None
        refusal = self.status.access.refusal(
            self.headers.get("Authorization"), query, str(self.server.server_address[0])
        )
        if refusal is not None:
            challenge = {"WWW-Authenticate": 'Bearer realm="echo-node status"'}
            headers = challenge if refusal.status is HTTPStatus.UNAUTHORIZED else {}
            self._reply(refusal.status, f"{refusal.reason}\n".encode(), headers=headers)
            return
        rendered = self.status.page.render()
        self._reply(rendered.status, rendered.html.encode(), "text/html; charset=utf-8", STATUS_HEADERS)

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        log.debug("http: " + format, *(hide_token(str(arg)) for arg in args))
