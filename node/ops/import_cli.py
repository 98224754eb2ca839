"""`echo-admin import`: a historical archive of signed reports and images."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin (being written: issue 17)."""
