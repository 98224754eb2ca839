"""`echo-admin quality`: drafts scored against signed reports."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin (being written: issue 17)."""
