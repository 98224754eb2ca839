"""`echo-admin dataset export`: a de-identified training set from signed reports."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin (being written: issue 17)."""
