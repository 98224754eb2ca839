"""FINDINGS and IMPRESSION sections from free-text radiology reports (MIMIC-CXR, RIS exports).

A section header is an upper-case label ending in a colon at the start of a line ("FINDINGS:",
"IMPRESSION:", "INDICATION:", "COMPARISON:" ...); a section runs to the next header. Only the
findings and impression are kept, whitespace collapsed. Combined headers ("FINDINGS AND
IMPRESSION:") fill the impression, "CONCLUSION:" counts as an impression, the first occurrence of
each section wins. Text without any findings or impression header yields None: a loader counts
such a row as bad rather than guess which part is which.
"""

from __future__ import annotations

import re

from echo.report import Report

# An upper-case label (letters, spaces, / & ( ) - ') of at most 40 characters, then a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()'\-]{0,39}?)[ \t]*:", re.MULTILINE)
_FINDINGS = {"FINDINGS", "FINDING"}
_IMPRESSION = {
    "IMPRESSION",
    "IMPRESSIONS",
    "CONCLUSION",
    "CONCLUSIONS",
    "FINDINGS AND IMPRESSION",
    "FINDINGS/IMPRESSION",
    "IMPRESSION AND FINDINGS",
}


def _clean(text: str) -> str:
    return " ".join(text.split())


def extract_sections(text: str) -> Report | None:
    """The report's findings and impression, or None when it has neither header."""
    matches = list(_HEADER.finditer(text))
    findings: str | None = None
    impression: str | None = None
    for number, match in enumerate(matches):
        label = " ".join(match.group(1).split())
        end = matches[number + 1].start() if number + 1 < len(matches) else len(text)
        body = _clean(text[match.end() : end])
        if label in _FINDINGS and findings is None:
            findings = body
        elif label in _IMPRESSION and impression is None:
            impression = body
    if findings is None and impression is None:
        return None
    return Report(findings or "", impression or "")


def report_from_fields(findings: object = None, impression: object = None, report: object = None) -> Report:
    """Explicit findings/impression win; otherwise the sections of a report text. ValueError says why not."""
    for name, value in (("findings", findings), ("impression", impression), ("report", report)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {type(value).__name__}")
    if (findings and findings.strip()) or (impression and impression.strip()):
        return Report(_clean(findings or ""), _clean(impression or ""))
    if not report or not report.strip():
        raise ValueError("no report text")
    sections = extract_sections(report)
    if sections is None:
        raise ValueError("report has no FINDINGS or IMPRESSION section")
    if not sections.findings and not sections.impression:
        raise ValueError("report's FINDINGS and IMPRESSION sections are empty")
    return sections
