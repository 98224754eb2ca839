"""A monitoring port that is taken is logged, and the process runs on without a listener."""

from __future__ import annotations

import logging
import socket

import pytest

from node.config.settings import MllpPeer
from node.observe.http import ObserveServer, Probes, registry_with
from node.observe.listener import start_listener


def test_a_taken_port_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    probes = Probes(registry_with(), {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = MllpPeer("127.0.0.1", taken.getsockname()[1])
        with caplog.at_level(logging.ERROR):
            server = start_listener(
                address, "ECHO_WORKER_HTTP", lambda host, port: ObserveServer(host, port, probes)
            )
    assert server is None
    assert caplog.messages == [
        f"no /metrics, /healthz or /readyz: cannot listen on {address} (ECHO_WORKER_HTTP): Address already in use"
    ]


def test_a_free_port_is_served() -> None:
    probes = Probes(registry_with(), {})
    server = start_listener(
        MllpPeer("127.0.0.1", 0), "ECHO_HTTP", lambda host, port: ObserveServer(host, port, probes)
    )
    assert server is not None and server.port > 0
    server.stop()
