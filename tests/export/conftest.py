"""The tiny random student exported once per session (shared with tests/runtime through pytest's
session base directory) and its torch model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from echo.export.random_tiny import exported_random_model
from echo.training.checkpoint import load_checkpoint


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    checkpoint, export = exported_random_model(tmp_path_factory.getbasetemp() / "echo-tiny-models")
    model, tokenizer, spec = load_checkpoint(checkpoint)
    return SimpleNamespace(checkpoint=checkpoint, export=export, model=model, tokenizer=tokenizer, spec=spec)
