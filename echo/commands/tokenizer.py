"""`echo-train tokenizer`: train the report BPE on a manifest's reports and save tokenizer.json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from echo.errors import UserError

DEFAULT_VOCAB_SIZE = 2048


SPLITS = ("train", "all")


def reports_from_manifest(path: Path, split: str = "train") -> list[str]:
    """The "report" text of every row of `split` ("all": every row, whatever its split); a row without
    one is an error, since training would skip it. A manifest without splits counts as training data.

    The default is the training split alone: a tokenizer that has seen the validation and test
    reports leaks their phrasing into every stage evaluated on them.
    """
    from echo.metrics.jsonl import read_jsonl

    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    rows = read_jsonl(path, "manifest")
    if not rows:
        raise UserError(f"manifest {path} has no rows")
    if split == "train" and any("split" in row for row in rows):
        rows = [row for row in rows if row.get("split") == "train"]
        if not rows:
            raise UserError(
                f'manifest {path} has no training rows (split "train"); --split all uses every row'
            )
    reports: list[str] = []
    for number, row in enumerate(rows, start=1):
        report = row.get("report")
        if not isinstance(report, str) or not report.strip():
            raise UserError(f'manifest {path} row {number} has no "report" text')
        reports.append(report)
    return reports


def command(
    data: Annotated[Path, typer.Option("--data", help="Manifest JSONL whose rows carry a 'report' field.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write tokenizer.json into.")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Target vocabulary size.")] = (
        DEFAULT_VOCAB_SIZE
    ),
    min_frequency: Annotated[
        int, typer.Option("--min-frequency", help="Fewest occurrences for a pair to be merged.")
    ] = 2,
    split: Annotated[
        str, typer.Option("--split", help="'train': the training split's reports only; 'all': every row")
    ] = "train",
) -> None:
    """Train a byte-level BPE (pad, eos, <|MASK|> and image specials at ids 0-5) on report texts."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from echo.tokenizer import ReportTokenizer, check_training_options

    check_training_options(vocab_size, min_frequency)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    reports = reports_from_manifest(data, split)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training tokenizer", total=len(reports))

        def fed() -> Iterator[str]:
            for report in reports:
                progress.advance(task)
                yield report

        tokenizer = ReportTokenizer.train(fed(), vocab_size=vocab_size, min_frequency=min_frequency)
    file = tokenizer.save(out)
    console.print(f"wrote {file}: {len(tokenizer)} tokens from {len(reports)} reports")
