"""The generated text made fit to store and send: printable characters only, tidy whitespace.

A byte-level tokenizer can decode to control characters or broken UTF-8 (shown as U+FFFD); those
would be refused by the MLLP framing (0x0B, 0x1C), flagged by DICOM validators in an SR TEXT item,
and mean nothing to a radiologist. What is stored is exactly what the SR and the ORU carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")
_SPACES = re.compile(r"[ \t]+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class EmptyReport(ValueError):
    """The model produced no findings and no impression."""


@dataclass(frozen=True)
class CleanReport:
    findings: str
    impression: str

    @property
    def text(self) -> str:
        return f"FINDINGS: {self.findings}\nIMPRESSION: {self.impression}"


def printable(text: str) -> str:
    """Control characters and U+FFFD removed, runs of blanks made one space, lines stripped."""
    # Only CR/LF break lines: str.splitlines would also break at 0x1C-0x1E and 0x0B, which are removed.
    lines = (_SPACES.sub(" ", _UNPRINTABLE.sub("", line)).strip() for line in _LINE_BREAK.split(text))
    return "\n".join(line for line in lines if line)


def clean_report(findings: str, impression: str) -> CleanReport:
    """Both sections cleaned; raises EmptyReport when nothing printable is left in either."""
    report = CleanReport(printable(findings), printable(impression))
    if not report.findings and not report.impression:
        raise EmptyReport("the model produced an empty report (no printable findings or impression)")
    return report
