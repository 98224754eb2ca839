"""What every entry point does first: settings (a bad one is a one-line UserError) and logging."""

from __future__ import annotations

import logging
from pathlib import Path

from echo.errors import UserError
from node.config.settings import Settings, SettingsError, load_settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def settings_for_cli(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except SettingsError as error:
        raise UserError(str(error)) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors unless debugging.
    if level != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom's validation warnings quote the offending value, which may be a patient's name or id:
    # route Python warnings into logging and keep both quiet at every level.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
