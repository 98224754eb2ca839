"""scripts/bundle_models.py keeps the run's metrics with each bundled checkpoint."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bundle_models.py"


@pytest.fixture(scope="module")
def bundle_models():
    spec = importlib.util.spec_from_file_location("bundle_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_come_from_the_run_directory(bundle_models, tiny_export, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "dcd"
    shutil.copytree(tiny_export.checkpoint, run / "best")
    (run / "best" / "metrics.json").unlink(missing_ok=True)
    (run / "metrics.json").write_text(json.dumps({"stage": "dcd", "steps": 7}))
    bundle_models.store(run / "best", tmp_path / "bundled")
    assert json.loads((tmp_path / "bundled" / "metrics.json").read_text()) == {"stage": "dcd", "steps": 7}


def test_a_bundled_checkpoint_keeps_its_own_metrics(bundle_models, tiny_export, tmp_path: Path) -> None:
    bundled = tmp_path / "assets" / "ar"
    shutil.copytree(tiny_export.checkpoint, bundled)
    (bundled / "metrics.json").write_text(json.dumps({"stage": "ar", "steps": 3000}))
    copy = tmp_path / "copy"
    shutil.copytree(bundled, copy)
    bundle_models.store(copy, bundled)
    assert json.loads((bundled / "metrics.json").read_text()) == {"stage": "ar", "steps": 3000}
    bundle_models.store(bundled, bundled)  # in place: read before the target is replaced
    assert json.loads((bundled / "metrics.json").read_text()) == {"stage": "ar", "steps": 3000}
    assert (bundled / "model.safetensors").is_file()
