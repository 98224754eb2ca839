"""The DICOM AE title rule (PS3.5 AE VR): 1-16 printable ASCII characters, no backslash, not all spaces."""

from __future__ import annotations

import re

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def check_ae_title(value: object, what: str) -> str:
    """`value` with surrounding spaces removed, or ValueError naming `what` (a setting, an option, an argument)."""
    if not isinstance(value, str) or not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(f"{what} {value!r} is not a DICOM AE title (1-16 printable characters, no backslash)")
    return value.strip()
