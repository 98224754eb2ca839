"""Training cost of Response-Asymmetric Diffusion vs duplicating the whole sequence, same data, same run.

For one batch of real training rows, counts the FLOPs of a forward + backward pass (torch's
FlopCounterMode) and times optimiser steps of both row layouts, interleaved so that machine noise
hits both alike. Prints the table and the ratios.

    python benchmarks/rad_cost.py --data runs/synthetic/manifest.jsonl --init runs/ar/best
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from echo.training.batches import Batcher
from echo.training.checkpoint import load_checkpoint, preprocess_config_of
from echo.training.examples import load_examples
from echo.training.objectives import NoiseConfig, full_duplication_loss, rad_loss
from echo.training.stages import freeze_vision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--init", type=Path, required=True, help="an AR checkpoint (RAD's starting point)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per layout")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer, spec = load_checkpoint(args.init)
    freeze_vision(model)
    config = preprocess_config_of(model)
    examples = load_examples(args.data, "train", config, limit=args.batch_size * 4)
    batcher = Batcher(examples, tokenizer, spec.prompt, config, args.block_size, spec.max_new_tokens)
    batch = batcher.ordered(args.batch_size, tokenizer.eos_id)[0]
    noise = NoiseConfig(args.block_size, tokenizer.mask_id)
    layouts = {"response only (RAD)": rad_loss, "whole sequence": full_duplication_loss}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    flops: dict[str, int] = {}
    for name, loss_fn in layouts.items():
        counter = FlopCounterMode(display=False)
        with counter:
            loss_fn(model, batch, noise, torch.Generator().manual_seed(0)).backward()
        flops[name] = counter.get_total_flops()
        optimizer.zero_grad(set_to_none=True)

    seconds: dict[str, list[float]] = {name: [] for name in layouts}
    for step in range(args.steps + 1):
        for name, loss_fn in layouts.items():
            started = time.perf_counter()
            loss = loss_fn(model, batch, noise, torch.Generator().manual_seed(step))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step:  # the first round warms up allocators and kernels
                seconds[name].append(time.perf_counter() - started)

    context, response = batch.context_ids.shape[1], batch.response_ids.shape[1]
    rows = {"response only (RAD)": context + 2 * response, "whole sequence": 2 * (context + response)}
    table = Table(
        title=f"RAD training cost: batch {batch.size}, context {context}, response {response}, B={args.block_size}"
    )
    for column in ("row layout", "row length", "train FLOPs / step", "median s / step"):
        table.add_column(column, justify="left" if column == "row layout" else "right")
    for name in layouts:
        table.add_row(
            name, str(rows[name]), f"{flops[name] / 1e9:.2f} G", f"{statistics.median(seconds[name]):.3f}"
        )
    rad, full = layouts
    table.add_row(
        "ratio RAD / full",
        f"{rows[rad] / rows[full]:.3f}",
        f"{flops[rad] / flops[full]:.3f} ({100 * (1 - flops[rad] / flops[full]):.1f}% fewer)",
        f"{statistics.median(seconds[rad]) / statistics.median(seconds[full]):.3f}",
    )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
