"""`echo-node`: run the node (`serve`), or try a running one with the bundled study (`demo`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import typer

from echo.errors import UserError
from node.config.startup import check_serve, configure_logging, run_role_cli, settings_for_cli

app = typer.Typer(
    name="echo-node",
    help="The ECHO node: receives studies over DICOM, queues chest radiographs for a draft report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Keeps `serve` and `demo` subcommands."""


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", help="settings TOML file (ECHO_* variables win)"),
) -> None:
    """Migrate the database, start the SCP and study assembly and, with the embedded broker, a worker.

    Checks first what it will need (the database and an external broker answer, the model
    directory holds a model) and stops with one line if not: exit 2 for a wrong setting, 3 for a
    service that does not answer (it may later). Once it listens it logs one line starting
    "echo-node ready:" (its ports, model, database and broker). Runs until Ctrl-C or SIGTERM,
    then stops cleanly.
    """
    from node.serve.ready import announce_ready
    from node.serve.runtime import Node, NodeStartError  # pynetdicom, SQLAlchemy, Celery: not for --help

    settings = settings_for_cli(config)
    configure_logging(settings.log_level, settings.log_format)
    check_serve(settings, config)
    stop = threading.Event()

    def _request_stop(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():  # asked twice: stop waiting for a clean stop
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    node = Node(settings)
    try:
        node.start()
        announce_ready(node)
        while not stop.wait(1.0):
            pass
    except NodeStartError as error:
        raise UserError(str(error)) from None
    finally:
        node.stop()


@app.command()
def demo(
    host: str = typer.Option("127.0.0.1", "--host", help="the node's address"),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="the node's DICOM port (default ECHO_PORT)"
    ),
    called_ae: str | None = typer.Option(
        None, "--called-ae", help="the node's AE title (default ECHO_AE_TITLE)"
    ),
    calling_ae: str = typer.Option("ECHODEMO", "--calling-ae", help="our AE title; the node must allow it"),
    timeout: float = typer.Option(120.0, "--timeout", min=1.0, help="seconds to wait for the report"),
    config: Path | None = typer.Option(None, "--config", help="the node's settings TOML file"),
    yes_send_to_production: bool = typer.Option(
        False,
        "--yes-send-to-production",
        help="send even when the node passes drafts on to a PACS/RIS off this machine, or is a production node",
    ),
) -> None:
    """Send the bundled synthetic chest study to a running node and print the report it drafts.

    Reads the answer from the node's database, so run it on the node's machine with the node's
    settings. Refuses when those settings send drafts to a PACS or RIS that may be the hospital's
    (not on this machine, or a production node) unless --yes-send-to-production is given.
    """
    from node.ops.demo_command import run_demo  # pynetdicom, SQLAlchemy: not for --help

    settings = settings_for_cli(config)
    run_demo(
        settings,
        host,
        port or settings.port,
        called_ae or settings.ae_title,
        calling_ae,
        timeout,
        send_to_production=yes_send_to_production,
    )


def main() -> None:
    run_role_cli(app, "echo-node")


if __name__ == "__main__":
    main()
