"""Write the bundled demo study: one small frontal CR image of the synthetic benchmark.

    .venv/bin/python scripts/make_demo_study.py [--out echo/assets/demo/chest-pa.dcm] [--seed 7] [--size 320]

Picks the first study of `--seed` that is a CR, PA, single-view, uncompressed MONOCHROME2 image
with at least one positive finding (so the demo report has something to say), draws it at
`--size` pixels and copies its frontal image to `--out`. The study depends only on (seed, index,
size), so running this again writes the same file. `echo-node demo` sends a copy of it with new
UIDs each run. The patient is synthetic (generated name and id), not a person.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import typer
from rich.console import Console

from echo.data.synthetic import generate_study, study_case
from echo.errors import UserError, run_cli

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "echo" / "assets" / "demo" / "chest-pa.dcm"
MAX_BYTES = 300_000
SEARCH_LIMIT = 500

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def demo_index(seed: int) -> int:
    """The first index of `seed` whose case suits the demo (see the module docstring)."""
    for index in range(SEARCH_LIMIT):
        case = study_case(seed, index)
        acquisition = case.acquisition
        if (
            acquisition.modality == "CR"
            and acquisition.view == "PA"
            and not acquisition.lateral
            and not acquisition.compressed
            and acquisition.photometric == "MONOCHROME2"
            and case.positives
        ):
            return index
    raise UserError(f"no suitable demo study among the first {SEARCH_LIMIT} of seed {seed}")


@app.command()
def command(
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="where to write the DICOM file"),
    seed: int = typer.Option(7, "--seed", help="synthetic benchmark seed"),
    size: int = typer.Option(320, "--size", min=64, max=1024, help="image side in pixels"),
) -> None:
    """Write the demo study's frontal image."""
    index = demo_index(seed)
    with tempfile.TemporaryDirectory() as folder:
        row = generate_study(seed, index, folder, size=size)
        written = Path(folder) / row.frontal
        if written.stat().st_size > MAX_BYTES:
            raise UserError(
                f"the image is {written.stat().st_size} bytes, over {MAX_BYTES}: use a smaller --size"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(written, out)
    Console().print(
        f"wrote {out} ({out.stat().st_size} bytes): study {row.id}, {row.view_position}, "
        f"positive: {', '.join(k for k, v in row.labels.items() if v == 'positive')}"
    )


if __name__ == "__main__":
    run_cli(app, "make_demo_study")
