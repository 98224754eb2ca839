"""The readiness checks of `/readyz`: each returns None when fine, else a one-line reason.

They reuse the start-up checks (`node.config.startup`), with a short timeout: a probe must answer
within the orchestrator's probe timeout even when a service hangs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from echo.errors import UserError
from node.config.settings import Settings
from node.config.startup import ServiceUnreachable, check_broker, check_model_dir
from node.store.model_versions import model_facts_of, serving_version

PROBE_TIMEOUT_S = 2.0


def database(sessions: Callable[[], Session]) -> Callable[[], str | None]:
    def check() -> str | None:
        with sessions() as session:
            session.execute(text("SELECT 1"))
        return None

    return check


def broker(settings: Settings) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            check_broker(settings, timeout_s=PROBE_TIMEOUT_S)
        except (ServiceUnreachable, UserError) as error:
            return str(error)
        return None

    return check


def model(settings: Settings) -> Callable[[], str | None]:
    """The model directory holds an exported model (its manifest and files); the worker verifies hashes."""

    def check() -> str | None:
        try:
            check_model_dir(settings)
        except UserError as error:
            return str(error)
        return None

    return check


def served_model(sessions: Callable[[], Session], settings: Settings) -> Callable[[], str | None]:
    """A model this process can draft with: the promoted version's export (its files present, its
    manifest the one the registry recorded), or else ECHO_MODEL_DIR's, to which a worker falls back
    when the promoted one will not load (`worker.served_model`, which logs why). Files are listed,
    not hashed (the pool process that loads them hashes them): a probe must answer fast. Models load
    on a worker's first study; which version each pool process holds is in /metrics."""
    configured = model(settings)

    def check() -> str | None:
        with sessions() as session:
            row = serving_version(session)
            promoted = None if row is None else (row.id, row.version, row.path, row.sha256)
        if promoted is None:
            return configured()
        version_id, version, path, sha256 = promoted
        problem = _export_problem(Path(path), sha256)
        if problem is None or (fallback := configured()) is None:
            return None
        return f"promoted version {version_id} ({version}) cannot be served: {problem}; and {fallback}"

    return check


def _export_problem(path: Path, sha256: str) -> str | None:
    from echo.runtime.manifest import load_manifest  # echo.runtime imports onnxruntime: not at import

    try:
        facts = model_facts_of(path, load_manifest(path, verify=False))
    except (UserError, OSError) as error:
        return str(error)
    return None if facts.sha256 == sha256 else f"{path} holds another export than the one registered"


def disk(spool: Path, min_free_mb: int) -> Callable[[], str | None]:
    """Above the guard that makes C-STORE answer 'out of resources' (ECHO_MIN_FREE_MB)."""

    def check() -> str | None:
        free_mb = shutil.disk_usage(spool).free // (1024 * 1024)
        if free_mb < min_free_mb:
            return f"{free_mb} MB free on the spool's disk, below the {min_free_mb} MB guard"
        return None

    return check
