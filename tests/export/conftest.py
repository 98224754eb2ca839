"""The tiny random student exported once per run (tests/conftest.py's `tiny_random_export`, shared
with tests/runtime) and its torch model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from echo.training.checkpoint import load_checkpoint


@pytest.fixture(scope="session")
def tiny_export(tiny_random_export: tuple[Path, Path]) -> SimpleNamespace:
    checkpoint, export = tiny_random_export
    model, tokenizer, spec = load_checkpoint(checkpoint)
    return SimpleNamespace(checkpoint=checkpoint, export=export, model=model, tokenizer=tokenizer, spec=spec)
