"""Whether a draft has both sections: a FINDINGS and an IMPRESSION header, each followed by at
least one word ("IMPRESSION: -" is empty). A draft without them cannot be filed as a report."""

from __future__ import annotations

import re
from collections.abc import Sequence

from echo.report import section_bodies

SECTIONS: tuple[str, ...] = ("FINDINGS", "IMPRESSION")
_HAS_WORD = re.compile(r"[A-Za-z0-9]")


def missing_sections(text: str) -> list[str]:
    """The sections a draft lacks or leaves empty, in order: [] for a complete draft."""
    bodies = section_bodies(text)
    return [name for name in SECTIONS if not _HAS_WORD.search(bodies.get(name, ""))]


def complete_share(reports: Sequence[str]) -> float:
    """The share of reports with both sections present and non-empty (0.0 for no reports)."""
    if not reports:
        return 0.0
    return sum(not missing_sections(report) for report in reports) / len(reports)
