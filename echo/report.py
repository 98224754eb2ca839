"""The normalised report text: a Findings section and an Impression section.

One string form is used everywhere (training targets, predictions, manifests):
``"FINDINGS: <findings>\\nIMPRESSION: <impression>"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SECTION = re.compile(r"\b(FINDINGS|IMPRESSION)\s*:\s*")  # headers are upper case, anywhere


@dataclass(frozen=True)
class Report:
    findings: str
    impression: str

    def text(self) -> str:
        return f"FINDINGS: {self.findings.strip()}\nIMPRESSION: {self.impression.strip()}"


def format_report(findings: str, impression: str) -> str:
    return Report(findings, impression).text()


def section_bodies(text: str) -> dict[str, str]:
    """{"FINDINGS": body, "IMPRESSION": body} for the headers the text has (the first of each),
    stripped; text before any header is not in it."""
    parts = _SECTION.split(text)
    sections: dict[str, str] = {}
    for header, body in zip(parts[1::2], parts[2::2], strict=False):
        sections.setdefault(header.upper(), body.strip())
    return sections


def split_report(text: str) -> Report:
    """Split a report string into its sections; text before any header counts as findings.

    Generated text may lack a header or repeat one; the first of each section wins and nothing
    raises, because a draft with a missing section is still worth showing to the radiologist.
    """
    lead = _SECTION.split(text)[0].strip()
    sections = section_bodies(text)
    findings = sections.get("FINDINGS", "")
    if lead:
        findings = f"{lead} {findings}".strip()
    return Report(findings, sections.get("IMPRESSION", ""))
