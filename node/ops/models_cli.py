"""`echo-admin models / retrain / promote / rollback`: the model registry and its gate."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin (being written: issue 17)."""
