"""`echo-train predict` on an exported model: one JSON line per study, as the torch path writes
(``{"id", "report", "tokens", "forwards", "seconds", "confidence"}``), so `echo-train evaluate` compares them."""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import Progress

from echo.runtime.engine import DecodeOptions, Engine
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
) -> int:
    """Generate for a manifest's studies (`split` None: all); returns the number of rows written.
    The engine reads each study's frontal image as it serves one (echo.data.preprocess.model_input),
    which is what the torch path feeds the model from its training examples."""
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
            reports = engine.generate_batch(images[start:stop], options=options)
            for offset, report in enumerate(reports):
                row = {
                    "id": rows[start + offset].id,
                    "report": report.text,
                    "tokens": report.tokens,
                    "forwards": report.forwards,
                    "seconds": report.seconds / report.batch_size,
                    "confidence": report.mean_confidence,
                }
                handle.write(json.dumps(row) + "\n")
                count += 1
            progress.advance(task, stop - start)
    tmp.replace(out)
    return count
