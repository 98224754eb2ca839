"""Every encoding the synthetic generator can emit passes dciodvfy with no errors (issue 21).

Rather than hoping a random seed hits every combination, each acquisition the sampler can draw
(`possible_acquisitions`: CR and DX, PA/AP with and without a lateral, MONOCHROME1/2, every bit
depth, uncompressed and JPEG 2000, every Modality LUT and VOI choice) is written once through
`generate_study`, and every file is checked.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from echo.data.case import (
    ASPECTS,
    BITS_STORED,
    MODALITIES,
    PHOTOMETRICS,
    possible_acquisitions,
    sample_case,
)
from echo.data.streams import component_rng
from echo.data.synthetic import MIN_SIZE, generate_study, study_case

SEED = 21
DCIODVFY = shutil.which("dciodvfy")


def test_possible_acquisitions_include_everything_the_sampler_draws() -> None:
    """The enumeration below stays in step with the sampler: a new option there must show up here."""
    space = set(possible_acquisitions())
    assert len(space) == len(list(possible_acquisitions()))  # no duplicates
    for index in range(3000):
        acquisition = sample_case(component_rng(SEED, index, "case")).acquisition
        assert acquisition.aspect in ASPECTS
        assert replace(acquisition, aspect=ASPECTS[0]) in space, acquisition


def _dciodvfy_errors(path: Path) -> list[str]:
    assert DCIODVFY is not None
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [f"{path.parent.name}/{path.name}: {line}" for line in lines if line.startswith("Error")]


@pytest.mark.integration
@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not on PATH")
def test_every_generated_encoding_passes_dciodvfy(tmp_path: Path) -> None:
    paths: list[Path] = []
    for index, acquisition in enumerate(possible_acquisitions()):
        acquisition = replace(acquisition, aspect=ASPECTS[index % len(ASPECTS)])
        case = replace(study_case(SEED, index), acquisition=acquisition)
        row = generate_study(SEED, index, tmp_path, size=MIN_SIZE, case=case)
        paths.extend(row.image_paths(tmp_path))

    # what was actually written covers every combination the issue names
    encodings, modality_luts = set(), set()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        encodings.add(
            (
                ds.Modality,
                ds.ViewPosition,
                ds.PhotometricInterpretation,
                ds.BitsStored,
                ds.file_meta.TransferSyntaxUID,
            )
        )
        modality_luts.add((ds.Modality, "RescaleSlope" in ds, "VOILUTSequence" in ds))
    assert min(BITS_STORED) == 12 and max(BITS_STORED) == 16
    expected = set(
        itertools.product(
            MODALITIES,
            ("PA", "AP", "LL"),
            PHOTOMETRICS,
            BITS_STORED,
            (ExplicitVRLittleEndian, JPEG2000Lossless),
        )
    )
    assert encodings == expected, (sorted(expected - encodings), sorted(encodings - expected))
    assert modality_luts == {
        ("CR", False, False),
        ("CR", False, True),
        ("CR", True, False),
        ("CR", True, True),
        ("DX", True, False),
        ("DX", True, True),
    }

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        errors = [line for lines in pool.map(_dciodvfy_errors, paths) for line in lines]
    assert not errors, f"{len(errors)} dciodvfy error(s) in {len(paths)} files:\n" + "\n".join(errors)
