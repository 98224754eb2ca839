"""`echo-worker`: a Celery worker (by default on the inference queue "gpu", one pool process), with its
/metrics, /healthz and /readyz on ECHO_WORKER_HTTP (`worker.observe`). `--pool solo` runs the tasks
in the worker's own process (the embedded node's worker), with the time limits of `worker.solo_limits`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from celery.apps import worker as celery_worker_app
from celery.signals import setup_logging
from celery.utils.log import get_multiprocessing_logger

from echo.errors import UserError
from echo.runtime.providers import provider_choice
from node.broker.app import WORKER_QUEUES
from node.config.startup import check_worker, configure_logging, run_role_cli, settings_for_cli
from worker.app import create_worker_app
from worker.observe import worker_listener
from worker.solo_limits import SoloTimeLimits

log = logging.getLogger("worker.cli")
POOLS = ("prefork", "solo")
app = typer.Typer(name="echo-worker", add_completion=False, pretty_exceptions_enable=False)


@app.command()
def command(
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="worker processes"),
    pool: str = typer.Option(
        "prefork",
        "--pool",
        "-P",
        help="prefork: a parent and --concurrency pool processes; solo: one process runs the tasks "
        "itself (the embedded node's; less memory, --concurrency 1)",
    ),
    queues: str = typer.Option(
        "gpu",
        "--queues",
        "-Q",
        help=f"comma-separated, of: {', '.join(WORKER_QUEUES)} (train: retraining, `echo-admin retrain --queue`)",
    ),
    loglevel: str = typer.Option(
        "", "--loglevel", "-l", help="DEBUG, INFO, WARNING, ERROR (default ECHO_LOG_LEVEL)"
    ),
    name: str = typer.Option("echo-worker@%h", "--name", "-n", help="node name, unique per host"),
    config: Path | None = typer.Option(None, "--config", help="settings TOML file (ECHO_* variables win)"),
) -> None:
    """Consume tasks until stopped (Ctrl-C or SIGTERM: finish the current task, then exit)."""
    settings = settings_for_cli(config)
    level = (loglevel or settings.log_level).upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise UserError(f"--loglevel {loglevel!r} is not one of DEBUG, INFO, WARNING, ERROR")
    chosen = [queue.strip() for queue in queues.split(",") if queue.strip()]
    unknown = sorted(set(chosen) - set(WORKER_QUEUES))
    if not chosen or unknown:
        raise UserError(
            f"--queues {queues!r}: unknown queue(s) {', '.join(unknown) or '(none given)'}; use {', '.join(WORKER_QUEUES)}"
        )
    if pool not in POOLS:
        raise UserError(f"--pool {pool!r} is not one of {', '.join(POOLS)}")
    if pool == "solo" and concurrency != 1:
        raise UserError(f"--pool solo runs one task at a time; --concurrency {concurrency} needs prefork")
    configure_logging(level, settings.log_format)
    check_worker(settings, config)  # model, database, broker: one line and exit 2 or 3 if not
    if settings.log_format == "json":
        setup_logging.connect(_celery_logs_through_ours)
        celery_worker_app.safe_say = _say_through_our_log  # its shutdown notice, else plain text
    log.info("consuming queues %s with %d worker process(es), pool %s", ",".join(chosen), concurrency, pool)
    log.info("%s", provider_choice(settings.ort_provider).summary())
    if pool == "solo":  # Celery enforces time limits from a pool's parent only: ours instead
        SoloTimeLimits().install()
    with worker_listener(settings):
        create_worker_app(settings).worker_main(
            [
                "--quiet",  # no banner: a dozen lines on stdout at every start, and not JSON
                "worker",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                f"--queues={','.join(chosen)}",
                f"--loglevel={level}",
                f"--hostname={name}",
            ]
        )


def _celery_logs_through_ours(**_: object) -> None:
    """Celery's `setup_logging` hook: with a receiver connected, Celery installs none of its own text
    handlers, so every line (billiard's pool logger's too) goes through our root handler as JSON."""
    pool = get_multiprocessing_logger()
    if pool is not None:
        pool.propagate = True
        pool.setLevel(logging.ERROR)


def _say_through_our_log(message: str, _file: object = None) -> None:
    """Celery's notices to the terminal ("worker: Warm shutdown (MainProcess)"), printed from its
    signal handlers, as one of our log lines (JSON) instead of plain text on stdout."""
    log.info("%s", message)


def main() -> None:
    run_role_cli(app, "echo-worker")


if __name__ == "__main__":
    main()
