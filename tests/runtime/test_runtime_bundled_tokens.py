"""The bundled student, decoded by the engine, writes the tokens (and mean confidences) pinned in
fixtures/bundled_student_tokens.json: captured from the engine before its CPU decoding loop was
rewritten for speed (preallocated buffers, cached masks, no sort on the one-step path), so any
change to that loop that changes what the served model writes fails here.

Regenerate (only for a deliberate change of the bundled model or of decoding semantics):
    .venv/bin/python -m tests.runtime.test_runtime_bundled_tokens
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from echo.data.phantom import draw_frontal
from echo.data.preprocess import to_uint8
from echo.data.synthetic import study_case
from echo.runtime import DecodeOptions, Engine

MODEL = Path(__file__).resolve().parents[2] / "echo" / "assets" / "models" / "student-onnx"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bundled_student_tokens.json"
SEED = 7
STUDIES = (0, 1, 2, 3, 4)
BATCH = (5, 6, 7)  # decoded together in one batch (one grid)
# (decode, steps): the served one-step decoding, and the others the engine offers on the student
DECODINGS = (("onestep", None), ("refine", None), ("multistep", None), ("multistep", 3), ("ar", None))


def study_image(index: int) -> np.ndarray:
    return to_uint8(draw_frontal(study_case(SEED, index), 256, SEED, index).pixels)


def decode_all(engine: Engine) -> dict[str, list[dict]]:
    """Per decoding: each study's token ids, forward count and steps per block, single and batched."""
    captured: dict[str, list[dict]] = {}
    for decode, steps in DECODINGS:
        options = DecodeOptions(decode=decode, steps=steps)
        reports = [engine.generate_batch([study_image(i)], options=options)[0] for i in STUDIES]
        reports += engine.generate_batch([study_image(i) for i in BATCH], options=options)
        captured[f"{decode}:{steps}"] = [
            {
                "study": study,
                "tokens": list(report.token_ids),
                "forwards": report.forwards,
                "batch_size": report.batch_size,
                # the draft gate reads it; rounded so a CPU with other float kernels still matches
                "mean_confidence": round(report.mean_confidence or 0.0, 5),
            }
            for study, report in zip((*STUDIES, *BATCH), reports, strict=True)
        ]
    return captured


@pytest.fixture(scope="module")
def bundled() -> Engine:
    return Engine.load(MODEL, providers="cpu", threads=1)


def test_bundled_student_writes_the_pinned_tokens(bundled: Engine) -> None:
    pinned = json.loads(FIXTURE.read_text())
    assert pinned["model_version"] == bundled.version, "the bundled model changed: regenerate the fixture"
    got = decode_all(bundled)
    for key, want in pinned["decodings"].items():
        for row, pinned_row in zip(got[key], want, strict=True):
            confidence = row.pop("mean_confidence")
            assert confidence == pytest.approx(pinned_row.pop("mean_confidence"), abs=2e-5), key
            assert row == pinned_row, f"{key}: the engine's tokens differ from the pinned ones"
    assert max(row["batch_size"] for row in got["onestep:None"]) > 1, "no study was decoded in a batch"


def test_pinned_reports_are_not_trivial() -> None:
    """The fixture must be able to catch a change: real multi-block reports, decodings that differ."""
    pinned = json.loads(FIXTURE.read_text())["decodings"]
    assert all(len(row["tokens"]) > 16 for rows in pinned.values() for row in rows)
    assert pinned["onestep:None"] != pinned["ar:None"]


if __name__ == "__main__":
    engine = Engine.load(MODEL, providers="cpu", threads=1)
    rows = {key: [json.dumps(row) for row in value] for key, value in decode_all(engine).items()}
    body = ",\n".join(f'  "{key}": [\n   ' + ",\n   ".join(lines) + "\n  ]" for key, lines in rows.items())
    FIXTURE.write_text(f'{{"model_version": "{engine.version}", "decodings": {{\n{body}\n}}}}\n')
    print(f"wrote {FIXTURE}")
