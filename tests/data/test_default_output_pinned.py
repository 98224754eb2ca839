"""Without a site, `make-synthetic` writes exactly what it wrote before sites existed (issue 17).

The bundled model was trained on `echo-train make-synthetic --n 4000 --seed 7 --size 256`, and its
build script regenerates that set: a change to any default study would silently change the
bundled model's data. These hashes were taken at commit 1e9714b, before the site shift was added:
study 0 (CR, uncompressed, ICU case), 7 (DX, PA with a lateral image) and 8 (MONOCHROME1, JPEG 2000
lossless, with a lateral image). Decoded pixels are hashed (so a different JPEG 2000 encoder
version cannot break the test), plus the report, the manifest row and an uncompressed file's bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydicom
import pytest

from echo.data.synthetic import generate_study

SEED, SIZE = 7, 256
PINNED = {
    0: {
        "pixels": ["220c95d500195d3901d53eb95e207f4e"],
        "report": "d2f3f5f66d6da0691d1e176aa4882823",
        "row": "ba3bec347a09bba4a53f0f056a812835",
        "frontal_file": "e79b363a3dad5cc6e502c9df5f546d4c",
    },
    7: {
        "pixels": ["fbf41b0c2db88411c7129fb29d9fc480", "ae1bd6dae4d3b1beea70b7512bebab4d"],
        "report": "fc2dbd31833526e360f6dd78b2f1839c",
        "row": "342c9ef3b0a0b6527e88c669eaca8419",
        "frontal_file": "eed97110223b669577d40a58d35871cc",
    },
    8: {
        "pixels": ["858ef7d76e0795202c7687c808f1bde6", "c4b44b87eab0081030b6bea272c229f5"],
        "report": "ffa6b5e0f67cc2d68e4f4372787034ee",
        "row": "57f9eccfb083c9b82be003f2d40297ae",
    },
}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


@pytest.mark.parametrize("index", sorted(PINNED))
def test_default_study_is_unchanged(tmp_path: Path, index: int) -> None:
    pinned = PINNED[index]
    row = generate_study(SEED, index, tmp_path, SIZE)
    assert row.site is None
    assert [_digest(pydicom.dcmread(tmp_path / image).pixel_array.tobytes()) for image in row.images] == (
        pinned["pixels"]
    )
    assert _digest(row.report.encode()) == pinned["report"]
    line = json.dumps(row.to_json(), ensure_ascii=False)
    assert '"site"' not in line  # default manifests keep their exact bytes
    assert _digest(line.encode()) == pinned["row"]
    if "frontal_file" in pinned:
        assert _digest((tmp_path / row.frontal).read_bytes()) == pinned["frontal_file"]
