"""The one line `echo-node serve` logs once it listens: what an operator (or a script) waits for.

It names what was actually bound (a monitoring port that was taken says so), the model drafts will
come from (the promoted version, else ECHO_MODEL_DIR's; "demo" for the bundled one), and which
database and broker the node uses, by kind only: never a host's password or a file's full URL.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import make_url
from sqlalchemy.orm import Session, sessionmaker

from node.config.demo_model import is_demo_model_version
from node.config.settings import Settings
from node.store.model_versions import serving_version

if TYPE_CHECKING:
    from node.serve.runtime import Node

READY = "echo-node ready"
log = logging.getLogger(__name__)


def announce_ready(node: Node) -> None:
    """Log the ready line (INFO, this module's logger whatever the entry point's name)."""
    log.info("%s", ready_line(node))


def ready_line(node: Node) -> str:
    """`echo-node ready: DICOM ECHO@0.0.0.0:11112, HL7 off, HTTP 127.0.0.1:8088, model … (demo), …`."""
    settings = node.settings
    assert node.database is not None, "node not started"
    parts = [
        f"DICOM {settings.ae_title}@{node.bind_address}:{settings.port}"
        + (" TLS" if settings.tls_cert else ""),
        _hl7(node),
        _http(node),
        model_part(settings, node.database.sessions),
        f"database {make_url(settings.effective_database_url).get_backend_name()}",
        "broker embedded" if settings.embedded_broker else f"broker {_scheme(settings.effective_broker_url)}",
    ]
    return f"{READY}: {', '.join(parts)}"


def _hl7(node: Node) -> str:
    settings = node.settings
    if settings.hl7_listen is None or node.hl7 is None:
        return "HL7 off"
    return f"HL7 {settings.hl7_listen.host}:{node.hl7.port}" + (" TLS" if settings.hl7_tls_cert else "")


def _http(node: Node) -> str:
    wanted = node.settings.http
    if wanted is None:
        return "HTTP off"
    if node.http is None:
        return f"HTTP {wanted} not listening (see the error above)"
    return f"HTTP {wanted.host}:{node.http.port}"


def model_part(settings: Settings, sessions: sessionmaker[Session]) -> str:
    """The promoted version if there is one, else the configured directory's manifest version."""
    with sessions() as session:
        serving = serving_version(session)
    version = serving.version if serving is not None else _manifest_version(settings)
    if version is None:
        return "model unreadable (see ECHO_MODEL_DIR)"
    return f"model {version}" + (" (demo)" if is_demo_model_version(version) else "")


def _manifest_version(settings: Settings) -> str | None:
    from echo.errors import UserError
    from echo.runtime.manifest import load_manifest  # onnxruntime: imported by the roles that infer anyway

    try:
        return load_manifest(settings.effective_model_dir, verify=False).version
    except UserError:
        return None


def _scheme(url: str) -> str:
    return url.partition("://")[0].split("+")[0] or "unknown"
