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


def disk(spool: Path, min_free_mb: int) -> Callable[[], str | None]:
    """Above the guard that makes C-STORE answer 'out of resources' (ECHO_MIN_FREE_MB)."""

    def check() -> str | None:
        free_mb = shutil.disk_usage(spool).free // (1024 * 1024)
        if free_mb < min_free_mb:
            return f"{free_mb} MB free on the spool's disk, below the {min_free_mb} MB guard"
        return None

    return check
