"""The draft's findings as coded statements: the labeler's reading of the draft's own text.

The structured results (the TID 1500 SR and the FHIR Observations) say what the narrative says, no
more: each finding class of `echo.findings.FINDINGS` the draft mentions is read as present, absent
or uncertain, with the side or lobe the text gives (`echo.findings.ATTRIBUTES`). A class the draft
does not mention is left out rather than coded absent: silence is not a negative finding. The
vocabulary has no severity, so none is coded.
"""

from __future__ import annotations

from dataclasses import dataclass

from echo.findings import FINDINGS, Label
from echo.metrics.attributes import attributes_of
from echo.metrics.labeler import analyse


@dataclass(frozen=True)
class FindingReading:
    finding: str  # one of echo.findings.FINDINGS
    label: Label  # positive (present), negative (absent) or uncertain (hedged)
    side: str | None = None  # "left" / "right" / "bilateral" where the finding has a side
    lobe: str | None = None  # e.g. "right lower lobe" for a consolidation

    @property
    def present(self) -> bool:
        return self.label is Label.POSITIVE


def draft_readings(findings: str, impression: str) -> tuple[FindingReading, ...]:
    """The findings the draft states, in `FINDINGS` order, read from both sections together."""
    analysis = analyse(f"{findings}\n{impression}")
    labels = analysis.labels()
    attributes = attributes_of(analysis)
    return tuple(
        FindingReading(
            finding=finding,
            label=labels[finding],
            side=attributes.get(finding, {}).get("side"),
            lobe=attributes.get(finding, {}).get("lobe"),
        )
        for finding in FINDINGS
        if finding in labels
    )
