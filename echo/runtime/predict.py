"""`echo-train predict` on an exported model: one JSON line per study, as the torch path writes
(``{"id", "report", "tokens", "forwards", "seconds", "confidence"}``), so `echo-train evaluate` compares them.

With `gate`, each study goes through the worker's draft gate (echo.runtime.draft_check): the row
holds the draft that would be sent (or, when held, the last one decoded), ``"gate"`` what the gate
did and ``"problems"`` why a held draft was held; ``forwards`` and ``seconds`` count every decode."""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import Progress

from echo.errors import UserError
from echo.runtime.draft_check import GatedDraft, gated_generate
from echo.runtime.engine import DecodeOptions, Engine
from echo.runtime.result import GeneratedReport
from echo.training.examples import split_rows


def predict_exported(
    model_dir: Path,
    data: Path,
    out: Path,
    *,
    decode: str | None = None,
    steps: int | None = None,
    threshold: float | None = None,
    split: str | None = "test",
    limit: int | None = None,
    batch_size: int = 1,
    providers: str | None = None,
    threads: int | None = None,
    gate: bool = False,
) -> int:
    """Generate for a manifest's studies (`split` None: all); returns the number of rows written.
    The engine reads each study's frontal image as it serves one (echo.data.preprocess.model_input),
    which is what the torch path feeds the model from its training examples."""
    if gate and (batch_size != 1 or decode or steps or threshold):
        raise UserError(
            "--gate decodes as a worker does: one study at a time, with the model's served decoding "
            "(no --batch-size, --decode, --steps or --threshold)"
        )
    engine = Engine.load(model_dir, providers=providers, threads=threads)
    options = DecodeOptions(decode=decode, steps=steps, threshold=threshold)
    engine.check_options(options)
    rows = split_rows(data, split, limit)
    images = [row.image_path(data.parent) for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle, Progress(transient=True) as progress:
        task = progress.add_task(
            f"predict ({decode or engine.manifest.generation.decode}, onnxruntime)", total=len(rows)
        )
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            if gate:
                written = [_gated_row(gated_generate(engine, images[start]))]
            else:
                written = [
                    _row(report) for report in engine.generate_batch(images[start:stop], options=options)
                ]
            for offset, row in enumerate(written):
                handle.write(json.dumps({"id": rows[start + offset].id, **row}) + "\n")
                count += 1
            progress.advance(task, stop - start)
    tmp.replace(out)
    return count


def _row(report: GeneratedReport) -> dict:
    return {
        "report": report.text,
        "tokens": report.tokens,
        "forwards": report.forwards,
        "seconds": report.seconds / report.batch_size,
        "confidence": report.mean_confidence,
    }


def _gated_row(gated: GatedDraft) -> dict:
    """The sent (or held) draft, with the forwards and seconds of every decode the gate ran."""
    row = _row(gated.report)
    row["forwards"], row["seconds"] = gated.forwards, gated.seconds
    row["gate"] = gated.outcome
    row["decoding"] = gated.report.decoding
    if gated.problems:
        row["problems"] = list(gated.problems)
    return row
