"""What every loader yields: `Example`s, plus a `LoadReport` of what was skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from echo.report import format_report

MAX_REASONS = 20


@dataclass(frozen=True)
class Example:
    id: str
    image_paths: tuple[Path, ...]
    frontal_path: Path  # the image the model reads; one of image_paths
    findings: str
    impression: str
    report: str  # format_report(findings, impression)

    @classmethod
    def make(
        cls, id: str, image_paths: tuple[Path, ...], frontal_path: Path, findings: str, impression: str
    ) -> Example:
        return cls(id, image_paths, frontal_path, findings, impression, format_report(findings, impression))


@dataclass
class LoadReport:
    """Rows (studies) seen, loaded and skipped, files found unreadable, and the first reasons.

    A bad row is skipped whole; a bad file found while scanning a folder is skipped alone (its study
    keeps its other images). Reasons read "<row or file>: <why>".
    """

    source: str
    total: int = 0
    loaded: int = 0
    skipped: int = 0
    bad_files: int = 0
    reasons: list[str] = field(default_factory=list)

    def _note(self, where: str, why: str) -> None:
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{where}: {why}")

    def skip(self, where: str, why: str) -> None:
        self.skipped += 1
        self._note(where, why)

    def bad_file(self, where: str, why: str) -> None:
        self.bad_files += 1
        self._note(where, why)

    def summary(self) -> str:
        line = f"{self.source}: {self.loaded} of {self.total} loaded, {self.skipped} skipped"
        if self.bad_files:
            line += f", {self.bad_files} unreadable file(s)"
        if self.reasons:
            line += f" (first: {self.reasons[0]})"
        return line


class LoadResult(NamedTuple):
    examples: list[Example]
    report: LoadReport
