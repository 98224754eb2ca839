"""The node's HTTP listener for monitoring (`node.observe`), started by `echo-node serve` on ECHO_HTTP.

A port that cannot be bound is logged and the node runs on without it (`node.observe.listener`,
shared with `echo-worker`): monitoring must never stop a node from taking studies. The same goes
for the status page: a token file that cannot be read leaves /status off (logged), never open.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError
from node.config.settings import Settings
from node.observe.figures_folder import embedded_worker_folder
from node.observe.http import ObserveServer, StatusRoute
from node.observe.listener import node_probes, start_listener
from node.observe.status_access import StatusAccess
from node.observe.status_page import StatusPage

log = logging.getLogger(__name__)


def start_observe(
    settings: Settings, sessions: sessionmaker[Session], *, serves_model: bool
) -> ObserveServer | None:
    """The listener with readiness checks for what this process needs; None when ECHO_HTTP is off or
    its port is taken. `serves_model`: the process drafts (embedded worker), so a model must load,
    and the embedded worker's own figures (`embedded_worker_folder`) are served with the node's."""
    if settings.http is None:
        return None
    figures = embedded_worker_folder(settings) if serves_model else None
    probes = node_probes(settings, sessions, serves_model=serves_model, process_figures=figures)
    return start_listener(
        settings.http,
        "ECHO_HTTP",
        lambda host, port: ObserveServer(host, port, probes, status_route(settings, sessions)),
    )


def status_route(settings: Settings, sessions: sessionmaker[Session]) -> StatusRoute | None:
    """The /status page with its access rule; None (no page) when the token file cannot be used."""
    try:
        access = StatusAccess.from_token_file(settings.status_token_file)
    except UserError as error:
        log.error("no /status page: %s", error)
        return None
    return StatusRoute(StatusPage(sessions, settings.ae_title), access)
