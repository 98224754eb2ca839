"""The draft's findings as coded statements: the labeler's reading of the draft's own text.

The structured results (the TID 1500 SR and the FHIR Observations) say what the narrative says, no
more: each finding class of `echo.findings.FINDINGS` the draft mentions is read as present, absent
or uncertain, with the side or lobe the text gives (`echo.findings.ATTRIBUTES`). A class the draft
does not mention is left out rather than coded absent: silence is not a negative finding. The
vocabulary has no severity, so none is coded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from echo.findings import ATTRIBUTES, FINDINGS, Label
from echo.metrics.attributes import attributes_of
from echo.metrics.labeler import analyse

_LABELS = frozenset(label.value for label in Label)


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


def check_readings(readings: Sequence[FindingReading]) -> None:
    """Readings as `draft_readings` makes them: known classes, each once, the sides and lobes it can have.

    Both structured builders (the AIR SR and the FHIR Bundle) code from the same tables, so they
    refuse the same readings with the same one-line error, naming the reading by its index.
    """
    if isinstance(readings, str | bytes | FindingReading) or not isinstance(readings, Sequence):
        raise TypeError("readings must be a sequence of FindingReading (exporters.readings.draft_readings)")
    seen: set[str] = set()
    for index, reading in enumerate(readings):
        name = f"readings[{index}]"
        if not isinstance(reading, FindingReading):
            raise TypeError(f"{name} must be a FindingReading, got {type(reading).__name__}")
        if reading.finding not in FINDINGS:
            raise ValueError(f"{name}.finding {reading.finding!r} is not a class of echo.findings.FINDINGS")
        if reading.finding in seen:
            raise ValueError(f"{name} repeats {reading.finding}: one reading per finding class")
        seen.add(reading.finding)
        if not isinstance(reading.label, str) or reading.label not in _LABELS:  # a Label or its value
            raise ValueError(f"{name}.label {reading.label!r} is not positive, negative or uncertain")
        for attribute in ("side", "lobe"):
            value = getattr(reading, attribute)
            allowed = ATTRIBUTES.get(reading.finding, {}).get(attribute, ())
            if value is not None and value not in allowed:
                choices = ", ".join(allowed) or "none"
                raise ValueError(
                    f"{name}.{attribute} {value!r} is not one {reading.finding} can have ({choices})"
                )
