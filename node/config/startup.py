"""What every entry point does first: settings (a bad one is a one-line UserError), logging, and the
checks that a role can actually run with them, before it starts anything.

`echo-node serve` and `echo-worker` check what they will need (the database answers, the model
directory holds an exported model, an external broker answers) and stop with one line naming the
variable or TOML key, instead of starting and failing every study minutes later. A service that
does not answer may come back by itself: that exit is 3 (systemd's `Restart=on-failure` tries
again), where a setting that is wrong exits 2 (`RestartPreventExitStatus=2`).

This module reaches the services with SQLAlchemy and kombu directly: node.config sits below
node.store and node.broker and imports neither.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from echo.errors import UserError, one_line, run_cli
from node.config.demo_model import DEMO_MODEL_WARNING, is_demo_model_dir
from node.config.logs import configure_logging as configure_logging  # the entry points' import
from node.config.settings import Settings, SettingsError, load_settings, setting_name

SERVICE_TIMEOUT_S = 3.0  # how long a start-up check waits for the database or the broker
EXIT_UNREACHABLE = 3

T = TypeVar("T")
log = logging.getLogger(__name__)


class ServiceUnreachable(UserError):
    """A service the settings name does not answer now; it may later (exit 3, not 2)."""


def settings_for_cli(config: Path | None) -> Settings:
    """The settings; with ECHO_LOG_FORMAT=json, log records are JSON lines from here on (echo-admin's
    warnings included; `serve` and `echo-worker` then set their level with `configure_logging`)."""
    try:
        settings = load_settings(config)
    except SettingsError as error:
        raise UserError(str(error)) from None
    if settings.log_format == "json":
        configure_logging("WARNING", "json")
    return settings


def run_role_cli(app: Callable[[], T], program: str) -> T:
    """`run_cli`, with a service that does not answer exiting 3 (worth a restart) instead of 2."""

    def guarded() -> T:
        try:
            return app()
        except ServiceUnreachable as error:
            print(f"{program}: error: {error}", file=sys.stderr)
            raise SystemExit(EXIT_UNREACHABLE) from None

    return run_cli(guarded, program)


# --- the checks ------------------------------------------------------------------------------------


def check_allow_list(settings: Settings, config: Path | None = None) -> None:
    """A production node must name its callers, or say in so many words that anyone may call."""
    reason = settings.production_reason
    if reason is None or settings.allowed_callers or settings.allow_any_caller:
        return
    raise UserError(
        f"{setting_name('allowed_callers', config)} is empty and this is a production node ({reason}): list the "
        "calling AE titles (AET or AET@host, comma-separated), or set ECHO_ALLOW_ANY_CALLER=true to accept any"
    )


def check_model_dir(settings: Settings, config: Path | None = None) -> None:
    """The model directory exists and holds an exported model (manifest and the files it lists)."""
    from echo.runtime.manifest import load_manifest  # onnxruntime: only for the roles that infer

    name = setting_name("model_dir", config)
    if settings.model_dir is None:
        name += " (unset: the bundled demo model)"
    try:
        load_manifest(settings.effective_model_dir, verify=False)  # the worker checks the sha256s
    except UserError as error:
        raise UserError(f"bad setting {name}: {error}") from None


def check_database(
    settings: Settings, config: Path | None = None, timeout_s: float = SERVICE_TIMEOUT_S
) -> None:
    """The URL names an installed driver and, unless it is a SQLite file (the node creates those),
    the server answers within `timeout_s` and lets us in."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    name = setting_name("database_url", config)
    url = make_url(settings.effective_database_url)
    where = url.render_as_string(hide_password=True)
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise UserError(f"bad setting {name}: no SQLAlchemy dialect or driver {url.drivername!r}") from None
    except ImportError as error:
        raise UserError(
            f"bad setting {name}: the driver for {url.drivername!r} is not installed ({error})"
        ) from None
    if url.get_backend_name() == "sqlite":
        return
    connect_args = (
        {"connect_timeout": max(1, round(timeout_s))} if url.get_backend_name() == "postgresql" else {}
    )
    engine = create_engine(url, connect_args=connect_args, hide_parameters=True, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()
        raise ServiceUnreachable(
            f"{name}: cannot connect to the database at {where}: {cause[0] if cause else type(error).__name__}"
        ) from None
    finally:
        engine.dispose()


def check_broker(
    settings: Settings, config: Path | None = None, timeout_s: float = SERVICE_TIMEOUT_S
) -> None:
    """An external broker answers within about `timeout_s` (the embedded one is a SQLite file)."""
    if settings.embedded_broker:
        return
    from kombu import Connection

    name = setting_name("broker_url", config)
    try:
        connection = Connection(settings.effective_broker_url, connect_timeout=timeout_s)
    except (KeyError, ValueError) as error:  # kombu: "No such transport: ..."
        raise UserError(f"bad setting {name}: {str(error).strip(chr(39))}") from None
    where = _safe_broker_url(settings.effective_broker_url)
    try:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
    except (KeyError, ValueError) as error:
        raise UserError(f"bad setting {name}: {str(error).strip(chr(39))}") from None
    except Exception as error:  # kombu's OperationalError, socket errors, a transport's own errors
        raise ServiceUnreachable(
            f"{name}: the broker at {where} does not answer: {one_line(error)}"
        ) from None
    finally:
        connection.release()


def _safe_broker_url(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    try:
        return maybe_sanitize_url(url)  # password masked
    except ValueError:  # a list of sentinels, say: name the transport only
        return f"{url.partition('://')[0]}://..."


def warn_if_demo_model(settings: Settings, role: str) -> None:
    """One WARNING line when the model this role serves is the bundled synthetic-data demo model."""
    if is_demo_model_dir(settings.effective_model_dir):
        log.warning("%s serves %s", role, DEMO_MODEL_WARNING)


def check_serve(settings: Settings, config: Path | None = None) -> None:
    """Before `echo-node serve` builds the node: what it will need, cheapest check first."""
    check_allow_list(settings, config)
    if settings.embedded_broker:  # the node runs the worker itself
        check_model_dir(settings, config)
    check_database(settings, config)
    check_broker(settings, config)
    if settings.embedded_broker:
        warn_if_demo_model(settings, "this node")


def check_worker(settings: Settings, config: Path | None = None) -> None:
    """Before `echo-worker` starts Celery: the model, the database and the broker."""
    check_model_dir(settings, config)
    check_database(settings, config)
    check_broker(settings, config)
    warn_if_demo_model(settings, "this worker")
