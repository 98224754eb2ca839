"""What one study's inference passes between its steps (`worker.inference`, `worker.batch`): the
engine it needs, the study made ready for the engine, and the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom import Dataset

from echo.runtime.manifest import ModelManifest
from echo.runtime.result import GeneratedReport
from worker.views import ViewCandidate, ViewPick


class ReportEngine(Protocol):
    """What inference needs from `echo.runtime.Engine` (tests give a stand-in)."""

    @property
    def model_dir(self) -> Path: ...

    @property
    def manifest(self) -> ModelManifest: ...

    def generate(self, image: Path, **options: Any) -> GeneratedReport: ...


@dataclass(frozen=True)
class InferenceResult:
    outcome: str  # "reported", "skipped" or "failed"
    detail: str
    report_id: int | None = None
    delivery_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class PreparedStudy:
    """A claimed study ready for the engine (`StudyInference.prepare`)."""

    study_id: int
    job_id: int
    engine: ReportEngine
    model_version_id: int
    instances: list[tuple[int, str]]  # (instance id, spool path) of every stored instance
    candidates: list[ViewCandidate]
    pick: ViewPick
    header: Dataset | None  # the chosen image's header when a draft is due; None: a report is reused

    @property
    def needs_draft(self) -> bool:
        return self.header is not None

    @property
    def image(self) -> Path:
        return Path(dict(self.instances)[self.pick.candidate.instance_id])

    @property
    def read_ids(self) -> frozenset[int]:
        return frozenset(instance_id for instance_id, _ in self.instances)
