"""Decoding speed of the three models, torch vs onnxruntime, on one machine in one run.

Rows: AR greedy, the multi-step teacher (low_confidence_dynamic, tau 0.85) and the one-step DCD
student, each on torch and on onnxruntime (CPU; CUDA / TensorRT with --providers). Batch 1, every
image once after a warm-up. Each row runs in a fresh process, so its peak RSS is its own (ORT's
arena is invisible to tracemalloc) and an onnxruntime row carries no torch.

    python benchmarks/decode_speed.py                      # the bundled models under echo/assets/models
    python benchmarks/decode_speed.py --random-tiny        # random-weight models made here (speed only)
    python benchmarks/decode_speed.py --providers cpu,cuda,tensorrt --data runs/synthetic/manifest.jsonl

Columns: tok/s = generated tokens / model time (vision + prefill + decoding, as echo.decoding times
it); ms/fwd = the decoding time after the first forward / the forwards after it (what one decoder
step costs: one position for AR, two blocks for the fused student); latency = the whole report,
image preprocessing included; start = load + warm-up. `--threads 1,2` gives a row per thread count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "echo" / "assets" / "models"
ROLES = (
    ("AR greedy", "ar", "ar"),
    ("teacher tau=0.85", "teacher", "multistep"),
    ("DCD student", "student", "onestep"),
)


@dataclass(frozen=True)
class RowSpec:
    label: str
    role: str  # ar | teacher | student
    decode: str  # ar | multistep | onestep
    backend: str  # torch | onnxruntime
    provider: str  # cpu for torch; the onnxruntime provider otherwise
    model_dir: str
    images: str  # .npz of uint8 display images, in order
    threads: int
    threshold: float
    max_new_tokens: int | None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for role in ("ar", "teacher", "student"):
        parser.add_argument(
            f"--{role}", type=Path, default=ASSETS / role, help=f"{role} checkpoint directory"
        )
        parser.add_argument(
            f"--{role}-onnx", type=Path, default=ASSETS / f"{role}-onnx", help=f"{role} exported directory"
        )
    parser.add_argument(
        "--random-tiny", action="store_true", help="make random-weight models and measure those"
    )
    parser.add_argument("--random-size", choices=("tiny", "small"), default="small")
    parser.add_argument("--data", type=Path, default=None, help="manifest.jsonl to take images from")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=8, help="reports per row")
    parser.add_argument(
        "--threads", default="1", help="CPU threads for torch and onnxruntime; a list gives rows for each"
    )
    parser.add_argument(
        "--providers", default="cpu", help="onnxruntime providers, one row each: cpu,cuda,tensorrt"
    )
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--threshold", type=float, default=0.85, help="the teacher's tau")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: each model's own")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one row, in a child
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(RowSpec(**json.loads(args.measure)))))
        return 0
    try:
        args.threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be integers separated by commas, not {args.threads!r}")
    if args.images < 1 or not args.threads or min(args.threads) < 1:
        parser.error("--images and --threads must be positive")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from echo.errors import UserError

    console = Console(width=max(150, Console().width))  # a log file keeps every column
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="echo-decode-speed-") as scratch:
        work = Path(scratch)
        try:
            models = (
                make_random_models(work, args.random_size, console)
                if args.random_tiny
                else given_models(args)
            )
            images_path = work / "images.npz"
            np.savez(images_path, *load_images(args, models["student"][0]))
        except UserError as error:
            console.print(f"[red]error:[/red] {error}")
            return 2
        specs = [
            RowSpec(
                label,
                role,
                decode,
                backend,
                provider,
                str(models[role][0 if backend == "torch" else 1]),
                str(images_path),
                threads,
                args.threshold,
                args.max_new_tokens,
            )
            for threads in args.threads
            for label, role, decode in ROLES
            for backend in backends
            for provider in (["cpu"] if backend == "torch" else providers)
        ]
        results = []
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("measuring", total=len(specs))
            for spec in specs:
                progress.update(task, description=f"{spec.label} on {spec.backend} ({spec.provider})")
                results.append(run_child(spec))
                progress.advance(task)
    print_table(console, results, args)
    if args.json:
        args.json.write_text(json.dumps({"random_tiny": args.random_tiny, "rows": results}, indent=2) + "\n")
    return 0 if all("error" not in r for r in results) else 1


def given_models(args: argparse.Namespace) -> dict[str, tuple[Path, Path]]:
    from echo.errors import UserError

    models = {
        role: (getattr(args, role), getattr(args, f"{role}_onnx")) for role in ("ar", "teacher", "student")
    }
    missing = [str(p) for pair in models.values() for p in pair if not p.is_dir()]
    if missing:
        raise UserError(
            f"model directories not found: {', '.join(missing)} (train them, or use --random-tiny)"
        )
    return models


def make_random_models(work: Path, size: str, console) -> dict[str, tuple[Path, Path]]:
    from rich.progress import Progress

    from echo.export.exporter import export_checkpoint
    from echo.export.random_tiny import make_random_checkpoint, synthetic_reports
    from echo.tokenizer import ReportTokenizer

    tokenizer = ReportTokenizer.train(synthetic_reports(200), vocab_size=512, min_frequency=2)
    models = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"random {size} models: checkpoint + export", total=3)
        for seed, role in enumerate(("ar", "teacher", "student")):
            checkpoint = make_random_checkpoint(
                work / role,
                role,
                seed=seed,
                size=size,
                max_new_tokens=96,
                never_stop=True,
                tokenizer=tokenizer,
            )
            export_checkpoint(checkpoint, work / f"{role}-onnx", force=True)
            models[role] = (checkpoint, work / f"{role}-onnx")
            progress.advance(task)
    return models


def load_images(args: argparse.Namespace, student_checkpoint: Path) -> list[np.ndarray]:
    """uint8 display images: the manifest's (as training reads them) or synthetic phantoms. Both
    backends preprocess them the same way; batch 1, so their grids may differ."""
    if args.data is not None:
        from echo.data.preprocess import PreprocessConfig
        from echo.training.examples import load_examples

        config = PreprocessConfig.from_dict(
            json.loads((student_checkpoint / "config.json").read_text())["preprocess"]
        )
        return list(load_examples(args.data, args.split, config, limit=args.images).images)
    from echo.data.phantom import draw_frontal
    from echo.data.preprocess import to_uint8
    from echo.data.synthetic import study_case

    return [
        to_uint8(draw_frontal(study_case(7, index), 256, 7, index).pixels) for index in range(args.images)
    ]


def run_child(spec: RowSpec) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(asdict(spec))],
        capture_output=True,
        text=True,
        check=False,
    )
    row: dict[str, Any] = {
        "label": spec.label,
        "backend": spec.backend,
        "provider": spec.provider,
        "threads": spec.threads,
    }
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {**row, "error": lines[-1] if lines else f"exit {done.returncode}"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


# ---- one row, in a child process ------------------------------------------------------------------


def measure(spec: RowSpec) -> dict[str, Any]:
    with np.load(spec.images) as stored:
        images = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    started = time.perf_counter()
    run_one = _torch_runner(spec) if spec.backend == "torch" else _onnx_runner(spec)
    run_one(images[0])  # warm-up
    start_seconds = time.perf_counter() - started
    tokens, forwards, model_seconds, step_seconds, latencies = [], [], [], [], []
    for image in images:
        began = time.perf_counter()
        n_tokens, n_forwards, seconds, after_first = run_one(image)
        latencies.append(time.perf_counter() - began)
        tokens.append(n_tokens)
        forwards.append(n_forwards)
        model_seconds.append(seconds)
        step_seconds.append(after_first)
    return {
        "reports": len(images),
        "tokens_per_report": float(np.mean(tokens)),
        "tokens_per_forward": sum(tokens) / max(sum(forwards), 1),
        "forwards_per_report": float(np.mean(forwards)),
        "tokens_per_second": sum(tokens) / sum(model_seconds),
        "ms_per_forward": 1000 * sum(step_seconds) / max(sum(forwards) - len(forwards), 1),
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p95_ms": float(np.percentile(latencies, 95) * 1000),
        "start_seconds": start_seconds,
        "peak_rss_mib": peak_rss_mib(),
        "torch_imported": "torch" in sys.modules,
    }


def peak_rss_mib() -> float:
    """This process's peak resident set. /proc's VmHWM belongs to the process image, whereas
    getrusage's ru_maxrss survives execve and would report the parent's peak when it is larger."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _onnx_runner(spec: RowSpec):
    from echo.runtime import Engine

    engine = Engine.load(spec.model_dir, providers=spec.provider, threads=spec.threads)

    def run_one(image: np.ndarray) -> tuple[int, int, float, float]:
        report = engine.generate(
            image, decode=spec.decode, threshold=spec.threshold, max_new_tokens=spec.max_new_tokens
        )
        timings = report.timings
        model_seconds = timings["vision"] + timings["decode"] + timings["prefill"]
        return report.tokens, report.forwards, model_seconds, timings["decode"]

    return run_one


def _torch_runner(spec: RowSpec):
    import torch

    from echo.data.preprocess import PreprocessConfig, preprocess
    from echo.decoding import Context, build_context_ids, decode_ar, decode_block_diffusion, decode_onestep
    from echo.training.checkpoint import load_checkpoint

    torch.set_num_threads(spec.threads)
    model, tokenizer, generation = load_checkpoint(Path(spec.model_dir))
    config = PreprocessConfig.from_dict(model.config.preprocess)
    prompt = tokenizer.encode(generation.prompt)
    max_new = spec.max_new_tokens or generation.max_new_tokens
    block = model.config.block_size

    def run_one(image: np.ndarray) -> tuple[int, int, float, float]:
        processed = preprocess(image.astype(np.float32) / 255.0, config)
        t, h, w = processed.grid_thw
        ids = build_context_ids(
            t * h * w // config.merge_size**2,
            prompt,
            vision_start_id=model.config.vision_start_token_id,
            image_pad_id=model.config.image_token_id,
            vision_end_id=model.config.vision_end_token_id,
        )
        context = Context(
            torch.tensor([ids]), torch.from_numpy(processed.pixel_values), torch.tensor([processed.grid_thw])
        )
        with torch.inference_mode():
            if spec.decode == "ar":
                result = decode_ar(model, context, max_new)
            elif spec.decode == "onestep":
                result = decode_onestep(model, context, block, max_new)
            else:
                result = decode_block_diffusion(model, context, block, max_new, threshold=spec.threshold)
        return len(result.tokens[0]), result.forwards, result.seconds, result.seconds - result.prefill_seconds

    return run_one


# ---- the table ----------------------------------------------------------------------------------


def print_table(console, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.table import Table

    title = "Decoding speed, batch 1" + (
        " - RANDOM-WEIGHT MODELS (--random-tiny): speed only" if args.random_tiny else ""
    )
    table = Table(
        title=title, caption="tok/s over model time; ms/fwd after the first forward; latency per report"
    )
    for column in (
        "model",
        "backend",
        "threads",
        "tok/report",
        "tok/fwd",
        "fwd/report",
        "tok/s",
        "ms/fwd",
        "p50 ms",
        "p95 ms",
        "start s",
        "peak RSS MiB",
    ):
        table.add_column(column, justify="left" if column in ("model", "backend") else "right")
    for row in results:
        backend = row["backend"] if row["backend"] == "torch" else f"onnxruntime {row['provider']}"
        if "error" in row:
            table.add_row(row["label"], backend, str(row["threads"]), f"[red]{row['error']}[/red]", *[""] * 8)
            continue
        table.add_row(
            row["label"],
            backend,
            str(row["threads"]),
            f"{row['tokens_per_report']:.1f}",
            f"{row['tokens_per_forward']:.2f}",
            f"{row['forwards_per_report']:.1f}",
            f"{row['tokens_per_second']:.1f}",
            f"{row['ms_per_forward']:.3f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{row['start_seconds']:.2f}",
            f"{row['peak_rss_mib']:.0f}",
        )
    console.print(table)
    speeds = {
        (r["label"], r["backend"], r["provider"], r["threads"]): r["tokens_per_second"]
        for r in results
        if "error" not in r
    }
    for backend, provider, threads in sorted({(r["backend"], r["provider"], r["threads"]) for r in results}):
        student = speeds.get(("DCD student", backend, provider, threads))
        for other in ("AR greedy", "teacher tau=0.85"):
            base = speeds.get((other, backend, provider, threads))
            if student and base:
                name = backend if backend == "torch" else f"onnxruntime {provider}"
                console.print(
                    f"{name}, {threads} thread(s): student / {other}: {student / base:.2f}x tokens per second"
                )


if __name__ == "__main__":
    sys.exit(main())
