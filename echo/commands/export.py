"""`echo-train export`: a checkpoint directory (AR, teacher or student) to an ONNX model directory
that the onnxruntime engine (echo.runtime) serves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echo.errors import UserError

DEFAULT_OPSET = 18  # echo.export.onnx_files.DEFAULT_OPSET, repeated so --help does not import torch


def command(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint", help="Checkpoint directory (config.json, model.safetensors, tokenizer.json)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the graphs and manifest.json into.")],
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Float16 graphs and embeddings (for GPU providers).")
    ] = False,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="int8 dynamic quantisation of the decoder's matrix products (CPU serving; the drafts "
            "change: compare with `echo-train predict` + `evaluate` before serving it).",
        ),
    ] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset, 17 or later.")] = DEFAULT_OPSET,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Model name in the manifest (default: the checkpoint's folder name)."),
    ] = None,
    redecode_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--redecode-checkpoint",
            help="A second checkpoint (the multi-step teacher; same tokenizer and image preprocessing) "
            "exported into OUT/redecode: the worker's draft gate re-decodes a failed draft with it first.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out directory.")] = False,
    external_data: Annotated[
        str,
        typer.Option(
            "--external-data",
            help="auto: weights in GRAPH.onnx.data only for a graph over 2 GB; always: for every graph.",
        ),
    ] = "auto",
) -> None:
    """Export vision.onnx + decoder.onnx (KV cache in and out, dynamic batch and lengths), the
    embedding table, the tokenizer and a checksummed manifest; checks the graphs against the model."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    for option, given in (("--checkpoint", checkpoint), ("--redecode-checkpoint", redecode_checkpoint)):
        if given is not None and not given.is_dir():
            raise UserError(f"{option} {given} is not a directory")
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        from echo.export.exporter import EXPORT_STEPS, export_checkpoint

        task = progress.add_task(f"exporting {checkpoint.name}", total=len(EXPORT_STEPS))

        def finished(step: str) -> None:
            progress.update(task, advance=1, description=f"exporting {checkpoint.name}: {step} done")

        manifest = export_checkpoint(
            checkpoint,
            out,
            fp16=fp16,
            int8=int8,
            opset=opset,
            name=name,
            force=force,
            external_data=external_data,
            redecode=redecode_checkpoint,
            on_step=finished,
        )
    size = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    console.print(
        f"wrote {out}: {manifest.name} version {manifest.version}, {manifest.quantization or manifest.dtype}, "
        f"opset {manifest.opset}, "
        f"decode {manifest.generation.decode}"
        + (f", re-decodes with {manifest.redecode}/" if manifest.redecode else "")
        + f", {size / 1e6:.1f} MB"
    )
