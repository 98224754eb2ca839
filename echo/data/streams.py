"""Independent random streams per (seed, study index, component).

Every part of a synthetic study (its case, the anatomy, each finding's drawing, the report wording,
the identifiers) draws from its own stream, so a study is reproducible on its own, in any worker and
in any order, and removing one finding from a case leaves every other pixel's randomness unchanged
(the tests rely on that to measure how visible each finding is).
"""

from __future__ import annotations

import zlib

import numpy as np


def component_rng(seed: int, index: int, component: str) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    key = zlib.crc32(component.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([seed, index, key]))
