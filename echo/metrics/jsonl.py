"""Reading JSON Lines files (manifests, predictions) with one-line errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from echo.errors import UserError


def read_jsonl(path: str | Path, what: str = "file") -> list[dict[str, Any]]:
    """Every non-blank line of ``path`` as a JSON object; ``what`` names the file in errors."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{what} {file} does not exist or is not a file")
    rows: list[dict[str, Any]] = []
    try:
        with file.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise UserError(f"{what} {file} line {number} is not JSON: {error.msg}") from None
                if not isinstance(row, dict):
                    raise UserError(f"{what} {file} line {number} is not a JSON object")
                rows.append(row)
    except UnicodeDecodeError:
        raise UserError(f"{what} {file} is not UTF-8 text") from None
    return rows
