"""The quality table of the ECHO paper's central claim, on the synthetic test split, in one run.

Rows: AR greedy; teacher tau=0.85 (multi-step, low_confidence_dynamic); the teacher forced to one
step per block (naive); the factorised-distilled one-step student; the DCD student. Columns:
positive-finding F1 (micro), ROUGE-L, BLEU-4, SemScore-MiniLM, repetition, tokens per forward,
tokens per second (torch, batch 1, this machine).

    python benchmarks/quality.py --data runs/synthetic/manifest.jsonl \
        --ar runs/ar/best --teacher runs/rad/best --factorised runs/dcd-factorised/best \
        --student runs/dcd/best [--limit 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from echo.metrics.evaluate import evaluate
from echo.metrics.jsonl import read_jsonl
from echo.training.checkpoint import load_checkpoint, preprocess_config_of
from echo.training.examples import load_examples
from echo.training.predict import DecodeOptions, predict_rows

ASSETS = Path(__file__).resolve().parent.parent / "echo" / "assets" / "models"


def rows_to_run(args: argparse.Namespace) -> list[tuple[str, Path, DecodeOptions]]:
    plan = [
        ("AR greedy", args.ar, DecodeOptions(decode="ar")),
        ("teacher tau=0.85", args.teacher, DecodeOptions(decode="multistep", threshold=0.85)),
        ("teacher one step (naive)", args.teacher, DecodeOptions(decode="onestep")),
        ("factorised one step", args.factorised, DecodeOptions(decode="onestep")),
        ("DCD student one step", args.student, DecodeOptions(decode="onestep")),
    ]
    return [(name, path, options) for name, path, options in plan if path is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="synthetic manifest.jsonl")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N test studies")
    parser.add_argument("--ar", type=Path, default=ASSETS / "ar")
    parser.add_argument("--teacher", type=Path, default=ASSETS / "teacher")
    parser.add_argument("--factorised", type=Path, default=None)
    parser.add_argument("--student", type=Path, default=ASSETS / "student")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: one core, as the paper's CPU claim)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--predictions", type=Path, default=None, help="keep each row's predictions in this folder"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    references = read_jsonl(args.data, "manifest")
    results: dict[str, dict] = {}
    semscore_model = None
    for name, path, options in rows_to_run(args):
        if not (path / "config.json").is_file():
            print(f"skipping {name}: no checkpoint at {path}", file=sys.stderr)
            continue
        model, tokenizer, spec = load_checkpoint(path)
        options = DecodeOptions(**{**options.__dict__, "max_new_tokens": spec.max_new_tokens})
        examples = load_examples(args.data, args.split, preprocess_config_of(model), limit=args.limit)
        predictions = list(predict_rows(model, tokenizer, spec.prompt, examples, options))
        if args.predictions:
            args.predictions.mkdir(parents=True, exist_ok=True)
            slug = name.split(" (")[0].replace(" ", "_").replace("=", "")
            (args.predictions / f"{slug}.jsonl").write_text(
                "".join(json.dumps(p) + "\n" for p in predictions)
            )
        wanted = {p["id"] for p in predictions}
        if semscore_model is None:
            from echo.metrics.semscore import load_minilm

            semscore_model = load_minilm()
        results[name] = evaluate(
            predictions, [r for r in references if r["id"] in wanted], semscore_model=semscore_model
        )
    studies = next(iter(results.values()))["evaluated"] if results else 0
    table = Table(title=f"ECHO quality, synthetic {args.split} split, {studies} studies, torch CPU, batch 1")
    for column in ("decoding", "pos. F1", "ROUGE-L", "BLEU-4", "SemScore", "rep. 4-gram", "tok/fwd", "tok/s"):
        table.add_column(column, justify="right" if column != "decoding" else "left")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r['positive_f1']['micro']:.3f}",
            f"{r['rouge_l']:.3f}",
            f"{r['bleu_4']:.3f}",
            f"{r['semscore_minilm']:.3f}" if r["semscore_minilm"] is not None else "-",
            f"{r['repetition']['repeated_4gram_share']:.3f}",
            f"{r['tokens_per_forward']:.2f}",
            f"{r['tokens_per_second']:.1f}",
        )
    Console(width=max(150, Console().width)).print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
