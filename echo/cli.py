"""`echo-train`: data, training stages, export, prediction and evaluation.

Each subcommand lives in its own module under `echo.commands` and exposes a function named
``command``; heavy imports (torch) happen inside those functions so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

from echo.errors import run_cli

# (command name, module under echo.commands)
COMMANDS: tuple[tuple[str, str], ...] = (
    ("make-synthetic", "make_synthetic"),
    ("tokenizer", "tokenizer"),
    ("init-from", "init_from"),
    ("ar", "train_ar"),
    ("rad", "train_rad"),
    ("dcd", "train_dcd"),
    ("export", "export"),
    ("predict", "predict"),
    ("evaluate", "evaluate"),
    ("probe", "probe"),
)

app = typer.Typer(
    name="echo-train",
    help="Make data, train the AR -> RAD -> DCD stages, export to ONNX, predict, evaluate and probe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name, _module in COMMANDS:
    if importlib.util.find_spec(f"echo.commands.{_module}") is not None:
        app.command(_name)(importlib.import_module(f"echo.commands.{_module}").command)


def main() -> None:
    run_cli(app, "echo-train")


if __name__ == "__main__":
    main()
