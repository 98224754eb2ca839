"""Decoding speed of the three models, torch vs onnxruntime, on one machine in one run.

Rows: AR greedy, the multi-step teacher (low_confidence_dynamic, tau 0.85) and the one-step DCD
student, each on torch and on onnxruntime (CPU; CUDA / TensorRT with --providers). Batch 1. Each
row lives in a process of its own for the whole run (its peak RSS is its own: ORT's arena is
invisible to tracemalloc; an onnxruntime row carries no torch), and the rows take turns: every
round decodes every image once in each row, so a machine that other work slows down slows all rows
alike, and a speed-up is a ratio of rows measured in the same round.

    python benchmarks/decode_speed.py                      # the bundled models under echo/assets/models
    python benchmarks/decode_speed.py --backends onnxruntime --rounds 7
    python benchmarks/decode_speed.py --random-tiny        # random-weight models made here (speed only)
    python benchmarks/decode_speed.py --providers cpu,cuda,tensorrt --data runs/synthetic/manifest.jsonl
    # a GPU: a random Qwen2.5-0.5B-sized decoder, float16 graphs, onnxruntime rows on CUDA and TensorRT
    python benchmarks/decode_speed.py --random-tiny --random-size 0.5b --fp16 --backends onnxruntime \
        --providers cuda,tensorrt --images 4 --rounds 3 --max-new-tokens 128 --json decode-gpu.json

--random-tiny makes one random checkpoint and one export that the three rows share (random weights:
the roles differ only in how they decode, which each row names), so a 0.5b run exports once.

The student's ONNX export is bundled, and the teacher's inside it (student-onnx/redecode/, the draft
gate's re-decode model); a model whose export directory is missing (AR's) is exported from its
checkpoint first (into --export-dir, reused by later runs, else a scratch folder).

Columns: tok/s = generated tokens / model time (vision + prefill + decoding, as echo.decoding times
it); ms/fwd = the decoding time after the first forward / the forwards after it (one decoder step:
one position for AR, two blocks for the fused student); fwd cost = ms/fwd over AR's on the same
backend; ceiling = (tok/fwd over AR's) / fwd cost, the speed-up over AR the decoding steps alone
allow; fixed ms = the rest of a report's model time (vision tower and prefill), which both pay and
which pulls the measured speed-up below the ceiling; tok/cpu-s = tokens / the process's CPU time
for the whole report (preprocessing included): on a machine that other work shares, a process
waiting for a CPU does not count, so this ratio moves less than the wall-clock one; latency = the
whole report, image preprocessing included; start = load + warm-up. `--threads 1,2` gives a row per thread count.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
BUNDLED_TEACHER_ONNX = ASSETS / "student-onnx" / "redecode"
ROLES = (
    ("AR greedy", "ar", "ar"),
    ("teacher tau=0.85", "teacher", "multistep"),
    ("DCD student", "student", "onestep"),
)
BASELINE, STUDENT = "AR greedy", "DCD student"


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
    exports = {"teacher": BUNDLED_TEACHER_ONNX}  # the teacher's export is bundled inside the student's
    for role in ("ar", "teacher", "student"):
        parser.add_argument(
            f"--{role}", type=Path, default=ASSETS / role, help=f"{role} checkpoint directory"
        )
        parser.add_argument(
            f"--{role}-onnx",
            type=Path,
            default=exports.get(role, ASSETS / f"{role}-onnx"),
            help=f"{role} exported directory",
        )
    parser.add_argument(
        "--export-dir", type=Path, default=None, help="where missing exports are made and kept between runs"
    )
    parser.add_argument(
        "--random-tiny", action="store_true", help="make random-weight models and measure those"
    )
    parser.add_argument(
        "--random-size",
        choices=("tiny", "small", "0.5b"),  # echo.export.random_tiny.SIZES (not imported: it needs torch)
        default="small",
    )
    parser.add_argument("--fp16", action="store_true", help="export float16 graphs (GPU providers)")
    parser.add_argument("--data", type=Path, default=None, help="manifest.jsonl to take images from")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=8, help="reports per row and round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds; each row decodes every image once a round"
    )
    parser.add_argument(
        "--threads", default="1", help="CPU threads for torch and onnxruntime; a list gives rows for each"
    )
    parser.add_argument(
        "--providers",
        "--provider",
        default="cpu",
        help="onnxruntime providers, one row each: cpu,cuda,tensorrt",
    )
    parser.add_argument("--backends", default="torch,onnxruntime")
    parser.add_argument("--threshold", type=float, default=0.85, help="the teacher's tau")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: each model's own")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and rounds here")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # internal: one row, in a child
    args = parser.parse_args(argv)
    if args.serve:
        return serve(RowSpec(**json.loads(args.serve)))
    try:
        args.threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    except ValueError:
        parser.error(f"--threads must be integers separated by commas, not {args.threads!r}")
    if args.images < 1 or args.rounds < 1 or not args.threads or min(args.threads) < 1:
        parser.error("--images, --rounds and --threads must be positive")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from echo.errors import UserError

    console = Console(width=max(200, Console().width))  # a log file keeps every column
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="echo-decode-speed-") as scratch:
        work = Path(scratch)
        try:
            if args.random_tiny:
                models = make_random_models(work, args.random_size, args.fp16, console)
            else:
                models = given_models(args, args.export_dir or work, "onnxruntime" in backends, console)
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
        rows = [Row(spec, work / f"row-{index}.stderr") for index, spec in enumerate(specs)]
        try:
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("loading", total=len(rows) * (args.rounds + 1))
                for row in rows:  # one at a time: a row's start time is not shared with another's
                    progress.update(task, description=f"loading {row.name}")
                    row.start()
                    progress.advance(task)
                for round_index in range(args.rounds):
                    # alternate the order, so no row always runs right after the same neighbour
                    for row in rows if round_index % 2 == 0 else rows[::-1]:
                        progress.update(task, description=f"round {round_index + 1}: {row.name}")
                        row.measure_round()
                        progress.advance(task)
        finally:
            for row in rows:
                row.stop()
    results = [row.summary() for row in rows]
    load_after = os.getloadavg()
    print_table(console, results, args, (load_before[0], load_after[0]))
    if args.json:
        args.json.write_text(
            json.dumps({"random_tiny": args.random_tiny, "rounds": args.rounds, "rows": results}, indent=2)
            + "\n"
        )
    return 0 if all("error" not in r for r in results) else 1


def given_models(
    args: argparse.Namespace, export_dir: Path, need_onnx: bool, console
) -> dict[str, tuple[Path, Path]]:
    """(checkpoint, exported directory) per role; an export that is missing is made from its
    checkpoint (or taken from export_dir when an earlier run made it from the same weights)."""
    from echo.errors import UserError

    models = {}
    for role in ("ar", "teacher", "student"):
        checkpoint, exported = getattr(args, role), getattr(args, f"{role}_onnx")
        if not checkpoint.is_dir():
            raise UserError(f"checkpoint directory not found: {checkpoint} (train it, or use --random-tiny)")
        if need_onnx and not exported.is_dir():
            exported = exported_copy(checkpoint, export_dir / f"{role}-onnx", console)
        models[role] = (checkpoint, exported)
    return models


def exported_copy(checkpoint: Path, out: Path, console) -> Path:
    from echo.errors import UserError
    from echo.export.exporter import export_checkpoint

    weights_file = checkpoint / "model.safetensors"
    if not weights_file.is_file():
        raise UserError(f"{checkpoint} holds no model.safetensors to export; name its export with --*-onnx")
    weights = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    manifest = out / "manifest.json"
    if manifest.is_file():
        source = json.loads(manifest.read_text()).get("source", {})
        if source.get("weights_sha256", {}).get("model.safetensors") == weights:
            return out
    console.print(f"exporting {checkpoint} to {out} (no export of it is bundled)")
    export_checkpoint(checkpoint, out, force=True)
    return out


def make_random_models(work: Path, size: str, fp16: bool, console) -> dict[str, tuple[Path, Path]]:
    """One random checkpoint and its export, shared by the three roles (each row names its decoding)."""
    from echo.export.exporter import export_checkpoint
    from echo.export.random_tiny import make_random_checkpoint, synthetic_reports
    from echo.tokenizer import ReportTokenizer

    tokenizer = ReportTokenizer.train(synthetic_reports(200), vocab_size=512, min_frequency=2)
    with console.status(f"random {size} model: checkpoint + export{' (float16)' if fp16 else ''}"):
        checkpoint = make_random_checkpoint(
            work / "random",
            "student",
            size=size,
            max_new_tokens=96,
            never_stop=True,
            tokenizer=tokenizer,
        )
        export_checkpoint(checkpoint, work / "random-onnx", fp16=fp16, force=True)
    return {role: (checkpoint, work / "random-onnx") for role in ("ar", "teacher", "student")}


def load_images(args: argparse.Namespace, student_checkpoint: Path) -> list[np.ndarray]:
    """uint8 display images: the manifest's frontal images or synthetic phantoms, at their own
    size. Both backends bring them to the model's input as a worker does (model_input); batch 1,
    so their grids may differ."""
    if args.data is not None:
        from echo.data.preprocess import load_pixels, to_uint8
        from echo.training.examples import split_rows

        rows = split_rows(args.data, args.split, args.images)
        return [to_uint8(load_pixels(row.image_path(args.data.parent))) for row in rows]
    from echo.data.phantom import draw_frontal
    from echo.data.preprocess import to_uint8
    from echo.data.synthetic import study_case

    return [
        to_uint8(draw_frontal(study_case(7, index), 256, 7, index).pixels) for index in range(args.images)
    ]


# ---- a row: its child process, seen from the parent ----------------------------------------------


class Row:
    """One row's child process: started once, asked for one round at a time, JSON lines back."""

    def __init__(self, spec: RowSpec, stderr: Path) -> None:
        self.spec = spec
        self.name = f"{spec.label} on {spec.backend} ({spec.provider}, {spec.threads} thread(s))"
        self.process: subprocess.Popen | None = None
        self.stderr = stderr  # the child's stderr, for the last line of an error
        self.error: str | None = None
        self.start_seconds = 0.0
        self.rounds: list[dict[str, list[float]]] = []
        self.final: dict[str, Any] = {}

    def start(self) -> None:
        with self.stderr.open("w") as stderr:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--serve", json.dumps(asdict(self.spec))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        ready = self._ask(None)
        if ready is not None:
            self.start_seconds = ready["start_seconds"]

    def measure_round(self) -> None:
        measured = self._ask("round")
        if measured is not None:
            self.rounds.append(measured)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.error is None:
            self.final = self._ask("quit") or {}
        self.process.wait(timeout=60)
        self.process = None

    def _ask(self, command: str | None) -> dict[str, Any] | None:
        """Send a command (None: just read the greeting); the child's JSON answer, or None after
        recording the child's last error line."""
        if self.error is not None or self.process is None:
            return None
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            if command is not None:
                self.process.stdin.write(command + "\n")
                self.process.stdin.flush()
            line = self.process.stdout.readline()
        except BrokenPipeError:
            line = ""
        if line.startswith("{"):
            return json.loads(line)
        self.process.wait(timeout=60)
        lines = self.stderr.read_text().strip().splitlines()
        self.error = lines[-1] if lines else f"exit {self.process.returncode}"
        return None

    def summary(self) -> dict[str, Any]:
        spec = self.spec
        row: dict[str, Any] = {
            "label": spec.label,
            "backend": spec.backend,
            "provider": spec.provider,
            "threads": spec.threads,
        }
        if self.error is not None or not self.rounds:
            return {**row, "error": self.error or "no round measured"}
        return {
            **row,
            **round_figures(self.rounds),
            "rounds": [round_figures([measured]) for measured in self.rounds],
            "start_seconds": self.start_seconds,
            **self.final,
        }


def round_figures(rounds: list[dict[str, list[float]]]) -> dict[str, float]:
    """Speed figures over these rounds' reports."""
    tokens = np.concatenate([r["tokens"] for r in rounds])
    forwards = np.concatenate([r["forwards"] for r in rounds])
    model = np.concatenate([r["model_seconds"] for r in rounds])
    steps = np.concatenate([r["step_seconds"] for r in rounds])
    latencies = np.concatenate([r["latencies"] for r in rounds])
    cpu = np.concatenate([r["cpu_seconds"] for r in rounds])
    return {
        "reports": int(len(tokens)),
        "tokens_per_report": float(tokens.mean()),
        "tokens_per_forward": float(tokens.sum() / max(forwards.sum(), 1)),
        "forwards_per_report": float(forwards.mean()),
        "tokens_per_second": float(tokens.sum() / model.sum()),
        "ms_per_forward": float(1000 * steps.sum() / max(forwards.sum() - len(forwards), 1)),
        "fixed_ms": float(1000 * (model - steps).mean()),
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p95_ms": float(np.percentile(latencies, 95) * 1000),
        "tokens_per_cpu_second": float(tokens.sum() / cpu.sum()),
    }


# ---- one row, in a child process ------------------------------------------------------------------


def serve(spec: RowSpec) -> int:
    """Load, warm up, say so; then one line per command: 'round' decodes every image once, 'quit'
    (or the parent gone) answers with the process's peak memory and ends."""
    with np.load(spec.images) as stored:
        images = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    started = time.perf_counter()
    run_one = _torch_runner(spec) if spec.backend == "torch" else _onnx_runner(spec)
    run_one(images[0])  # warm-up
    _answer({"start_seconds": time.perf_counter() - started})
    for command in sys.stdin:
        if command.strip() != "round":
            break
        measured: dict[str, list[float]] = {
            "tokens": [],
            "forwards": [],
            "model_seconds": [],
            "step_seconds": [],
            "latencies": [],
            "cpu_seconds": [],
        }
        for image in images:
            began, cpu_began = time.perf_counter(), time.process_time()
            n_tokens, n_forwards, seconds, after_first = run_one(image)
            measured["cpu_seconds"].append(time.process_time() - cpu_began)
            measured["latencies"].append(time.perf_counter() - began)
            measured["tokens"].append(n_tokens)
            measured["forwards"].append(n_forwards)
            measured["model_seconds"].append(seconds)
            measured["step_seconds"].append(after_first)
        _answer(measured)
    _answer({"peak_rss_mib": peak_rss_mib(), "torch_imported": "torch" in sys.modules})
    return 0


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


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

    from echo.data.preprocess import PreprocessConfig, model_input
    from echo.decoding import Context, build_context_ids, decode_ar, decode_block_diffusion, decode_onestep
    from echo.training.checkpoint import load_checkpoint

    torch.set_num_threads(spec.threads)
    model, tokenizer, generation = load_checkpoint(Path(spec.model_dir))
    config = PreprocessConfig.from_dict(model.config.preprocess)
    prompt = tokenizer.encode(generation.prompt)
    max_new = spec.max_new_tokens or generation.max_new_tokens
    block = model.config.block_size

    def run_one(image: np.ndarray) -> tuple[int, int, float, float]:
        processed = model_input(image.astype(np.float32) / 255.0, config)  # as the engine does
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


def print_table(
    console, results: list[dict[str, Any]], args: argparse.Namespace, load: tuple[float, float]
) -> None:
    from rich.table import Table

    title = f"Decoding speed, batch 1, {args.rounds} interleaved round(s) of {args.images} reports" + (
        " - RANDOM-WEIGHT MODELS (--random-tiny): speed only" if args.random_tiny else ""
    )
    caption = (
        "tok/s over model time; ms/fwd after the first forward; fwd cost and ceiling relative to AR on the "
        f"same backend; latency per report. Load average {load[0]:.2f} before, {load[1]:.2f} after, on "
        f"{os.cpu_count()} CPUs"
    )
    table = Table(title=title, caption=caption)
    columns = (
        "model",
        "backend",
        "threads",
        "tok/report",
        "tok/fwd",
        "fwd/report",
        "tok/s",
        "tok/cpu-s",
        "ms/fwd",
        "fwd cost",
        "ceiling",
        "fixed ms",
        "p50 ms",
        "p95 ms",
        "start s",
        "peak RSS MiB",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "backend") else "right")
    for row in results:
        backend = row["backend"] if row["backend"] == "torch" else f"onnxruntime {row['provider']}"
        if "error" in row:
            table.add_row(
                row["label"],
                backend,
                str(row["threads"]),
                f"[red]{row['error']}[/red]",
                *[""] * (len(columns) - 4),
            )
            continue
        cost, ceiling = relative_to_baseline(row, results)
        table.add_row(
            row["label"],
            backend,
            str(row["threads"]),
            f"{row['tokens_per_report']:.1f}",
            f"{row['tokens_per_forward']:.2f}",
            f"{row['forwards_per_report']:.1f}",
            f"{row['tokens_per_second']:.1f}",
            f"{row['tokens_per_cpu_second']:.1f}",
            f"{row['ms_per_forward']:.3f}",
            "" if cost is None else f"{cost:.2f}x",
            "" if ceiling is None else f"{ceiling:.2f}x",
            f"{row['fixed_ms']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{row['start_seconds']:.2f}",
            f"{row.get('peak_rss_mib', float('nan')):.0f}",
        )
    console.print(table)
    for line in speedup_lines(results):
        console.print(line)


def relative_to_baseline(
    row: dict[str, Any], results: list[dict[str, Any]]
) -> tuple[float | None, float | None]:
    """(fwd cost, ceiling): this row's ms per forward over AR's on the same backend, provider and
    threads, and the speed-up over AR its tokens per forward allow at that cost."""
    base = _same_setting(row, results, BASELINE)
    if base is None or base["ms_per_forward"] <= 0:
        return None, None
    cost = row["ms_per_forward"] / base["ms_per_forward"]
    return cost, row["tokens_per_forward"] / base["tokens_per_forward"] / cost


def speedup_lines(results: list[dict[str, Any]]) -> list[str]:
    """Student over each other model, per setting: the tokens-per-second ratio of each round
    (both rows measured in that round), as min / median / max, next to the ceiling."""
    lines = []
    for row in results:
        if row["label"] != STUDENT or "error" in row:
            continue
        name = row["backend"] if row["backend"] == "torch" else f"onnxruntime {row['provider']}"
        for other in ("AR greedy", "teacher tau=0.85"):
            base = _same_setting(row, results, other)
            if base is None:
                continue
            pairs = list(zip(row["rounds"], base["rounds"], strict=True))
            ratios = [mine["tokens_per_second"] / theirs["tokens_per_second"] for mine, theirs in pairs]
            cpu = [mine["tokens_per_cpu_second"] / theirs["tokens_per_cpu_second"] for mine, theirs in pairs]
            line = (
                f"{name}, {row['threads']} thread(s): student / {other}: "
                f"{min(ratios):.2f} / {float(np.median(ratios)):.2f} / {max(ratios):.2f}x tokens per second "
                f"(min / median / max over {len(ratios)} rounds; in CPU time {float(np.median(cpu)):.2f}x)"
            )
            if other == BASELINE:
                _, ceiling = relative_to_baseline(row, results)
                line += f"; ceiling from tok/fwd and fwd cost {ceiling:.2f}x" if ceiling else ""
            lines.append(line)
    return lines


def _same_setting(row: dict[str, Any], results: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    for other in results:
        if (
            other["label"] == label
            and "error" not in other
            and all(other[key] == row[key] for key in ("backend", "provider", "threads"))
        ):
            return other
    return None


if __name__ == "__main__":
    sys.exit(main())
