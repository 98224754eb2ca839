"""A signed report's text cut into Findings and Impression by its headings.

RIS systems send the report as one text blob (or one OBX per line) with headings such as
``FINDINGS:`` and ``IMPRESSION:``, often after others (``CLINICAL HISTORY:``, ``TECHNIQUE:``,
``COMPARISON:``) and sometimes in another order. A heading is a known name followed by a colon at
the start of a line (any case), or FINDINGS / IMPRESSION / CONCLUSION in capitals anywhere (a blob
on one line). Conclusion and opinion count as the impression; history, indication, technique and
comparison end the section before them and are not kept in either. Text before the first heading is
the findings when no FINDINGS heading exists (as `echo.report.split_report` reads a draft), and a
text without any heading is all findings.
"""

from __future__ import annotations

import re

_FINDINGS = ("FINDING",)
_IMPRESSION = ("IMPRESSION", "CONCLUSION", "OPINION")
_HEADING = re.compile(
    r"(?:^|(?<=\n))[ \t]*(?i:(?P<line>findings?|impressions?|conclusions?|opinion"
    r"|(?:clinical )?history|clinical (?:information|details|indications?)|indications?"
    r"|reason for (?:exam(?:ination)?|study)|technique|comparisons?|examination|exam|procedure))[ \t]*:"
    r"|\b(?P<inline>FINDINGS|IMPRESSIONS?|CONCLUSIONS?)[ \t]*:"
)


def _kind(heading: str) -> str:
    name = heading.upper()
    if name.startswith(_FINDINGS):
        return "findings"
    if name.startswith(_IMPRESSION):
        return "impression"
    return "other"


def _clean(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def split_sections(text: str) -> tuple[str, str]:
    """(findings, impression) of a report text; each stripped, line breaks kept, blank lines dropped."""
    matches = list(_HEADING.finditer(text))
    if not matches:
        return _clean(text), ""
    bodies: dict[str, list[str]] = {"findings": [], "impression": [], "other": []}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        bodies[_kind(match.group("line") or match.group("inline"))].append(text[match.end() : end])
    findings = _clean("\n".join(bodies["findings"]))
    if not any(_kind(match.group("line") or match.group("inline")) == "findings" for match in matches):
        findings = _clean(text[: matches[0].start()])
    return findings, _clean("\n".join(bodies["impression"]))
