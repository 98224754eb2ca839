"""Errors a user can cause: every command turns these into one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A failure the user can fix (bad path, bad file, bad option). The message is one line."""


def one_line(error: BaseException) -> str:
    """The error as one line for a database note or a log: its type and the first line of its text."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_cli(app: Callable[[], T], program: str) -> T:
    """Run a Typer/Click app, turning `UserError` (and Ctrl-C) into one line and exit code 2 / 130."""
    try:
        return app()
    except UserError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
