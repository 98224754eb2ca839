"""A small synthetic data set generated once per test session (16 studies at 128 px)."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.data.manifest import ManifestRow, read_manifest
from echo.data.synthetic import generate_dataset

SEED = 7
N_STUDIES = 16
SIZE = 128


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(N_STUDIES, SEED, out, size=SIZE, workers=1)
    return out


@pytest.fixture(scope="session")
def synthetic_rows(synthetic_dir: Path) -> list[ManifestRow]:
    return read_manifest(synthetic_dir / "manifest.jsonl")
