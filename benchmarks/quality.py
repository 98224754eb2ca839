"""The quality table of the ECHO paper's central claim, and the speed-quality curve of the served
decodings, on one split of the synthetic data set, in one run.

Rows: AR greedy; teacher tau=0.85 (multi-step, low_confidence_dynamic); the teacher forced to one
step per block (naive); the factorised-distilled one-step student; the DCD student one step per
block; the DCD student with confidence-gated refinement at each --refine-thresholds value (one
forward per block, one more where a position's confidence is below the threshold); and what the
node serves: the exported student (--served, onnxruntime) through the worker's draft gate, scored
on the drafts it sends, its held share in its own column and every forward it spent counted in
its tokens per forward. Columns:
positive-finding F1 (micro) with its precision and recall, false-positive findings per normal
study, adjacent duplicated words (share of words), drafts with a broken sentence (echo.metrics.sentences), drafts with both sections, fluency (the AR
model's per-token NLL of the drafts given their images, nats), ROUGE-L, BLEU-4, SemScore-MiniLM,
4-gram repetition, tokens per forward, tokens per second (torch, batch 1, this machine).

    python benchmarks/quality.py --data runs/synthetic/manifest.jsonl \\
        --ar runs/ar/best --teacher runs/rad/best --factorised runs/dcd-factorised/best \\
        --student runs/dcd/best [--split val] [--limit 200] [--refine-thresholds 0.7,0.9] \\
        [--no-semscore] [--json out.json]

Pick a refine threshold on --split val, then run the test split once with it.
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
from echo.training.examples import ExampleSet, load_examples
from echo.training.fluency import ArFluency
from echo.training.predict import DecodeOptions, predict_rows

ASSETS = Path(__file__).resolve().parent.parent / "echo" / "assets" / "models"
COLUMNS = (
    "decoding", "pos. F1", "P", "R", "FP/normal", "dup words", "broken sent.", "both sect.", "AR NLL",
    "ROUGE-L", "BLEU-4", "SemScore", "rep. 4-gram", "held", "tok/fwd", "tok/s",
)  # fmt: skip
SERVED = "served: student ONNX one step + draft gate"


def thresholds(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if any(not 0.0 <= value <= 1.0 for value in values):
        raise argparse.ArgumentTypeError("refine thresholds must be within [0, 1]")
    return values


def served_predictions(args: argparse.Namespace) -> list[dict]:
    """The served row's drafts: `echo-train predict --gate` on the exported student, kept with the
    other rows' predictions when --predictions is given."""
    from tempfile import TemporaryDirectory

    from echo.runtime.predict import predict_exported

    with TemporaryDirectory() as scratch:
        out = (args.predictions or Path(scratch)) / "served_gated.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        predict_exported(
            args.served, args.data, out, split=args.split, limit=args.limit, threads=args.threads, gate=True
        )
        return read_jsonl(out, "served predictions")


def held_share(result: dict) -> str:
    """The share of studies the draft gate held (no draft sent); "-" for a row without the gate."""
    gate = result.get("gate")
    return "-" if not gate else f"{gate['held'] / sum(gate.values()):.3f}"


def rows_to_run(args: argparse.Namespace) -> list[tuple[str, Path, DecodeOptions]]:
    plan = [
        ("AR greedy", args.ar, DecodeOptions(decode="ar")),
        ("teacher tau=0.85", args.teacher, DecodeOptions(decode="multistep", threshold=0.85)),
        ("teacher one step (naive)", args.teacher, DecodeOptions(decode="onestep")),
        ("factorised one step", args.factorised, DecodeOptions(decode="onestep")),
        ("DCD student one step", args.student, DecodeOptions(decode="onestep")),
    ]
    plan += [
        (f"DCD student refine tau={t:g}", args.student, DecodeOptions(decode="refine", threshold=t))
        for t in args.refine_thresholds
    ]
    return [(name, path, options) for name, path, options in plan if path is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="synthetic manifest.jsonl")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N studies of the split")
    parser.add_argument("--ar", type=Path, default=ASSETS / "ar")
    parser.add_argument("--teacher", type=Path, default=ASSETS / "teacher")
    parser.add_argument("--factorised", type=Path, default=None)
    parser.add_argument("--student", type=Path, default=ASSETS / "student")
    parser.add_argument(
        "--refine-thresholds",
        type=thresholds,
        default=[0.7, 0.8, 0.9],
        help="comma-separated refine thresholds for the student ('' for none)",
    )
    parser.add_argument(
        "--fluency-model", type=Path, default=ASSETS / "ar", help="the AR checkpoint that scores fluency"
    )
    parser.add_argument("--no-semscore", action="store_true", help="skip SemScore-MiniLM (slow on a CPU)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: one core, as the paper's CPU claim)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--predictions", type=Path, default=None, help="keep each row's predictions in this folder"
    )
    parser.add_argument(
        "--served",
        type=lambda text: Path(text) if text else None,
        default=ASSETS / "student-onnx",
        help="the exported student the node serves, drafted through the draft gate ('' for no such row)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    references = read_jsonl(args.data, "manifest")
    fluency = ArFluency(args.fluency_model, args.data)
    results: dict[str, dict] = {}
    semscore_model = None
    runs: list[tuple[str, list[dict]]] = []
    examples_by_config: dict[str, ExampleSet] = {}  # every checkpoint's images read once per preprocessing
    for name, path, options in rows_to_run(args):
        if not (path / "config.json").is_file():
            print(f"skipping {name}: no checkpoint at {path}", file=sys.stderr)
            continue
        model, tokenizer, spec = load_checkpoint(path)
        options = DecodeOptions(**{**options.__dict__, "max_new_tokens": spec.max_new_tokens})
        config = preprocess_config_of(model)
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in examples_by_config:
            examples_by_config[key] = load_examples(args.data, args.split, config, limit=args.limit)
        examples = examples_by_config[key]
        predictions = list(predict_rows(model, tokenizer, spec.prompt, examples, options))
        if args.predictions:
            args.predictions.mkdir(parents=True, exist_ok=True)
            slug = name.split(" (")[0].replace(" ", "_").replace("=", "")
            (args.predictions / f"{slug}.jsonl").write_text(
                "".join(json.dumps(p) + "\n" for p in predictions)
            )
        runs.append((name, predictions))
    if args.served is not None:
        runs.append((SERVED, served_predictions(args)))
    for name, predictions in runs:
        if semscore_model is None and not args.no_semscore:
            from echo.metrics.semscore import load_minilm

            semscore_model = load_minilm()
        results[name] = evaluate(
            predictions,
            [r for r in references if r["id"] in {p["id"] for p in predictions}],
            with_semscore=not args.no_semscore,
            semscore_model=semscore_model,
            fluency=fluency,
        )
        confident = [p["confidence"] for p in predictions if p.get("confidence") is not None]
        results[name]["mean_token_confidence"] = sum(confident) / len(confident) if confident else None
    wanted = {p["id"] for p in runs[0][1]} if runs else set()  # every row drafts the same studies
    signed = [r for r in references if r["id"] in wanted]
    floor = fluency([r["id"] for r in signed], [r["report"] for r in signed]) if signed else None
    studies = next(iter(results.values()))["evaluated"] if results else 0
    table = Table(
        title=f"ECHO quality, synthetic {args.split} split, {studies} studies, torch CPU, "
        f"{args.threads} thread(s), batch 1"
    )
    for column in COLUMNS:
        table.add_column(column, justify="right" if column != "decoding" else "left")
    for name, r in results.items():
        f1, fluent = r["positive_f1"], r["fluency"]
        table.add_row(
            name,
            f"{f1['micro']:.3f}",
            f"{f1['micro_precision']:.3f}",
            f"{f1['micro_recall']:.3f}",
            f"{r['normal_studies']['false_positives_per_study']:.3f}",
            f"{r['duplicate_words']['rate']:.4f}",
            f"{r['broken_sentences']['reports_with_broken']:.3f}",
            f"{r['both_sections']:.3f}",
            f"{fluent['ar_nll_per_token']:.3f}" if fluent else "-",
            f"{r['rouge_l']:.3f}",
            f"{r['bleu_4']:.3f}",
            f"{r['semscore_minilm']:.3f}" if r["semscore_minilm"] is not None else "-",
            f"{r['repetition']['repeated_4gram_share']:.3f}",
            held_share(r),
            f"{r['tokens_per_forward']:.2f}",
            f"{r['tokens_per_second']:.1f}",
        )
    console = Console(width=max(180, Console().width))
    console.print(table)
    if SERVED in results:
        console.print(
            f"{SERVED}: onnxruntime, scored on the drafts the gate sent (held: no draft); its tok/fwd "
            "counts every forward of every decode, its tok/s is not comparable with the torch rows'"
        )
    if floor is not None:
        console.print(
            f"AR NLL of the signed reports of these studies: {floor.nll_per_token:.3f} nats per token "
            f"({floor.tokens} tokens)"
        )
    if args.json:
        payload = {
            "split": args.split,
            "threads": args.threads,
            "rows": results,
            "signed_reports_ar_nll": None if floor is None else floor.nll_per_token,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
