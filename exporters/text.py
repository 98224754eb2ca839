"""Report sections as lines: one SR TEXT item and one OBX segment per non-blank line.

Both outputs cut the text at the same places, so the PACS and the RIS show the same paragraphs, and
a line break survives the HL7 round trip as a segment boundary rather than as an escape sequence.
"""

from __future__ import annotations


def section_lines(text: str) -> list[str]:
    """The non-blank lines of a report section, each stripped; blank lines carry no content."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_sections(findings: str, impression: str) -> tuple[list[str], list[str]]:
    """Split both sections into lines, refusing a report with nothing in it.

    One empty section is allowed: a draft that lacks an impression is still worth showing to the
    radiologist (see `echo.report.split_report`); the builders then leave that section out.
    """
    for argument, value in (("findings", findings), ("impression", impression)):
        if not isinstance(value, str):
            raise TypeError(f"{argument} must be a string, got {type(value).__name__}")
    findings_lines = section_lines(findings)
    impression_lines = section_lines(impression)
    if not findings_lines and not impression_lines:
        raise ValueError("findings and impression are both empty: there is no report to send")
    return findings_lines, impression_lines
