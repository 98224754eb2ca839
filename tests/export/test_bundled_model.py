"""The node's default model (ECHO_MODEL_DIR unset): the exported DCD student committed under
echo/assets/models. It must be what its checkpoint exports to today, and every bundled model
together (AR, teacher, student, the ONNX student) must fit the 30 MB budget."""

from __future__ import annotations

from pathlib import Path

import echo
from echo.export.verify import fresh_export_differences

MODELS = Path(echo.__file__).resolve().parent / "assets" / "models"
CHECKPOINT, EXPORT = MODELS / "student", MODELS / "student-onnx"
BUDGET_BYTES = 30 * 1024 * 1024


def test_bundled_student_matches_a_fresh_export(tmp_path) -> None:
    assert fresh_export_differences(EXPORT, CHECKPOINT, tmp_path) == []


def test_bundled_student_fits_the_budget_and_serves_onestep() -> None:
    from echo.runtime import load_manifest

    manifest = load_manifest(EXPORT)
    assert manifest.generation.decode == "onestep"
    assert sum(path.stat().st_size for path in MODELS.rglob("*") if path.is_file()) <= BUDGET_BYTES
