"""The node's default model (ECHO_MODEL_DIR unset): the exported DCD student committed under
echo/assets/models, with the exported teacher inside it as the draft gate's re-decode model. It must
be what its checkpoints export to today, and every bundled model together (AR, teacher, student,
the ONNX student and teacher) must fit the 40 MB budget."""

from __future__ import annotations

from pathlib import Path

import echo
from echo.export.verify import fresh_export_differences

MODELS = Path(echo.__file__).resolve().parent / "assets" / "models"
CHECKPOINT, EXPORT, TEACHER = MODELS / "student", MODELS / "student-onnx", MODELS / "teacher"
BUDGET_BYTES = 40 * 1000 * 1000


def test_bundled_student_matches_a_fresh_export(tmp_path) -> None:
    assert fresh_export_differences(EXPORT, CHECKPOINT, tmp_path, redecode_checkpoint=TEACHER) == []


def test_bundled_student_fits_the_budget_and_serves_onestep() -> None:
    from echo.runtime import load_manifest

    manifest = load_manifest(EXPORT)
    assert manifest.generation.decode == "onestep"
    assert load_manifest(EXPORT / manifest.redecode).generation.decode == "multistep"
    assert sum(path.stat().st_size for path in MODELS.rglob("*") if path.is_file()) <= BUDGET_BYTES
