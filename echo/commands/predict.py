"""`echo-train predict`: write one JSON line per study with the generated report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echo.errors import UserError


def command(
    model: Annotated[Path, typer.Option(help="a checkpoint directory (torch) or an exported ONNX directory")],
    data: Annotated[Path, typer.Option(help="manifest.jsonl")],
    out: Annotated[Path, typer.Option(help="predictions .jsonl")],
    decode: Annotated[
        str | None,
        typer.Option(help="ar | multistep | onestep | refine (default: what the model serves)"),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="multistep: step budget per block (default: block size)")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="multistep: low_confidence_dynamic tau; refine: positions below this confidence "
            "are re-predicted in one more forward of their block"
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="manifest split to predict ('all' for every row)")] = "test",
    limit: Annotated[int | None, typer.Option(help="first N studies only")] = None,
    batch_size: Annotated[int, typer.Option(help="studies per decoding call (1 gives exact timings)")] = 1,
    gate: Annotated[
        bool,
        typer.Option(
            help="an exported model only: each draft goes through the worker's draft gate (re-decoded "
            "when broken, held when it stays broken); the rows say which, `evaluate` scores the sent ones"
        ),
    ] = False,
) -> None:
    """Generate reports for a manifest's studies."""
    if batch_size < 1:
        raise UserError("--batch-size must be positive")
    if (model / "manifest.json").is_file():
        from echo.runtime.predict import predict_exported

        count = predict_exported(
            model,
            data,
            out,
            decode=decode,
            steps=steps,
            threshold=threshold,
            split=None if split == "all" else split,
            limit=limit,
            batch_size=batch_size,
            gate=gate,
        )
    elif gate:
        raise UserError("--gate needs an exported model (the worker's draft gate runs on onnxruntime)")
    else:
        from echo.training.checkpoint import load_checkpoint, preprocess_config_of
        from echo.training.examples import load_examples
        from echo.training.predict import DecodeOptions, predict_rows, write_jsonl

        net, tokenizer, spec = load_checkpoint(model)
        chosen = decode or spec.decode
        default_threshold = spec.threshold_for(chosen)
        options = DecodeOptions(
            decode=chosen,
            steps=steps,
            threshold=default_threshold if threshold is None else threshold,
            max_new_tokens=spec.max_new_tokens,
        )
        examples = load_examples(
            data, None if split == "all" else split, preprocess_config_of(net), limit=limit
        )
        count = write_jsonl(predict_rows(net, tokenizer, spec.prompt, examples, options, batch_size), out)
    typer.echo(f"wrote {count} predictions to {out}")
