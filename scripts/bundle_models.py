"""Copy trained checkpoints into echo/assets/models and export the served student to ONNX, with the
teacher exported beside it (student-onnx/redecode/) as the draft gate's re-decode model.

Checkpoints are stored in float16 (half the bytes; the bundled models must stay under 40 MB in all)
and the ONNX models are exported from the stored float16 weights, so a fresh export of the bundled
checkpoints reproduces the bundled graphs exactly.

    python scripts/bundle_models.py --ar runs/ar/best --teacher runs/rad/best --student runs/dcd/best
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from echo.training.checkpoint import load_checkpoint, save_checkpoint

ASSETS = Path(__file__).resolve().parent.parent / "echo" / "assets" / "models"


def run_metrics(source: Path) -> Path | None:
    """The metrics.json that describes `source`: its own (a bundled or copied checkpoint carries
    it) or its run's (`runs/dcd/best` -> `runs/dcd/metrics.json`)."""
    for candidate in (source / "metrics.json", source.parent / "metrics.json"):
        if candidate.is_file():
            return candidate
    return None


def store(source: Path, target: Path) -> None:
    model, tokenizer, spec = load_checkpoint(source)
    metrics = run_metrics(source)
    metrics_text = metrics.read_bytes() if metrics else None  # read first: source may be target
    shutil.rmtree(target, ignore_errors=True)
    save_checkpoint(model.to(torch.float16), tokenizer, spec, target)
    if metrics_text is not None:
        (target / "metrics.json").write_bytes(metrics_text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ar", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True)
    args = parser.parse_args(argv)
    for name, source in (("ar", args.ar), ("teacher", args.teacher), ("student", args.student)):
        store(source, ASSETS / name)
    onnx_dir = ASSETS / "student-onnx"
    shutil.rmtree(onnx_dir, ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "echo.cli",
            "export",
            "--checkpoint",
            str(ASSETS / "student"),
            "--out",
            str(onnx_dir),
            "--redecode-checkpoint",
            str(ASSETS / "teacher"),
        ],
        check=True,
    )
    total = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    print(f"bundled models: {total / 2**20:.1f} MiB under {ASSETS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
