"""`echo-node`: run the node (`serve`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import typer

from echo.errors import UserError, run_cli
from node.startup import configure_logging, settings_for_cli

app = typer.Typer(
    name="echo-node",
    help="The ECHO node: receives studies over DICOM, queues chest radiographs for a draft report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Keeps `serve` a subcommand (more join it later)."""


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", help="settings TOML file (ECHO_* variables win)"),
) -> None:
    """Migrate the database, start the SCP and study assembly and, with the embedded broker, a worker.

    Runs until Ctrl-C or SIGTERM, then stops cleanly.
    """
    from node.runtime import Node, NodeStartError  # pynetdicom, SQLAlchemy, Celery: not for --help

    settings = settings_for_cli(config)
    configure_logging(settings.log_level)
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
        while not stop.wait(1.0):
            pass
    except NodeStartError as error:
        raise UserError(str(error)) from None
    finally:
        node.stop()


def main() -> None:
    run_cli(app, "echo-node")


if __name__ == "__main__":
    main()
