"""`echo-train make-synthetic`: write N synthetic chest X-ray studies (DICOM) and manifest.jsonl."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from echo.errors import UserError

MAX_STUDIES = 10_000_000


def _check_out_dir(out: Path) -> None:
    """Refuse anything that could overwrite or mix with existing data: nothing is ever lost."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; choose a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {out}: cannot create folder ({error.strerror or error})") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"--out {out} is not writable")


def command(
    n: Annotated[int, typer.Option("--n", help="Number of studies to generate.")],
    out: Annotated[Path, typer.Option("--out", help="New or empty output folder.")],
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed; the same seed gives the same data set.")
    ] = 0,
    size: Annotated[
        int, typer.Option("--size", help="Image height in pixels (width follows the detector).")
    ] = 512,
    workers: Annotated[int, typer.Option("--workers", help="Parallel worker processes.")] = min(
        4, os.cpu_count() or 1
    ),
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Draw the studies as this site would send them: its detector look, case mix and "
            "report style (docs/site-shift.md). Presets: riverside, lakeside; any other name gets "
            "a shift derived from the name. Without it: the bundled model's training look.",
        ),
    ] = None,
) -> None:
    """Write N synthetic studies (CR/DX DICOM, some JPEG 2000) with reports, labels and splits."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from echo.data.site import SITE_SEED_LIMIT, check_site_name
    from echo.data.synthetic import MAX_SIZE, MIN_SIZE, generate_dataset

    if not 1 <= n <= MAX_STUDIES:
        raise UserError(f"--n must be between 1 and {MAX_STUDIES}, got {n}")
    if seed < 0:
        raise UserError(f"--seed must be zero or positive, got {seed}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    if not 1 <= workers <= 256:
        raise UserError(f"--workers must be between 1 and 256, got {workers}")
    if site is not None:
        check_site_name(site)
        if seed >= SITE_SEED_LIMIT:
            raise UserError(f"--seed must be below {SITE_SEED_LIMIT} with --site, got {seed}")
    _check_out_dir(out)

    console = Console(stderr=True)
    started = time.perf_counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("studies" if site is None else f"{site} studies", total=n)
        manifest = generate_dataset(
            n,
            seed,
            out,
            size=size,
            workers=min(workers, n),
            on_study=lambda _row: progress.advance(task),
            site=site,
        )
    elapsed = time.perf_counter() - started
    of_site = "" if site is None else f" of site {site}"
    console.print(
        f"wrote {n} studies{of_site} and {manifest} in {elapsed:.1f} s ({n / elapsed:.1f} studies/s)"
    )
