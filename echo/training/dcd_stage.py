"""Stage 3 driver: alternate collection (teacher, on its own prefix) and alignment (student).

Each round draws fresh training inputs, runs the teacher's multi-step decoding on them with
`low_confidence_dynamic` remasking and records its trajectories (`collect`), drops degenerate ones,
then trains the student for a number of steps on what was collected. The student starts from the
teacher; the teacher never changes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from echo.decoding import Context, decode_block_diffusion
from echo.decoding.result import BlockTrajectory
from echo.errors import UserError
from echo.training.batches import Batch, Batcher
from echo.training.checkpoint import GenerationSpec, save_checkpoint
from echo.training.distill import STEP_WEIGHTS, SoftTargets, Targets, dcd_loss, has_repetition_loop
from echo.training.examples import shape_groups
from echo.training.loop import LoopConfig, Trainer, seed_everything, write_json
from echo.training.objectives import rad_logits
from echo.training.scale import peak_memory, prepare_frozen, prepare_model, resolve_device, to_device
from echo.training.selection import best_score_entry, selection_score
from echo.training.stages import DataArgs, freeze_vision, make_batchers

TARGETS = ("stitched", "factorised")


@dataclass
class DcdArgs:
    out: Path
    data: DataArgs
    loop: LoopConfig
    rounds: int = 3
    collect_per_round: int = 512
    collect_batch_size: int = 32
    val_collect: int = 64
    batch_size: int = 16
    threshold: float = 0.85
    target: str = "stitched"  # "factorised": the mean-field baseline the paper argues against
    step_weighting: str = "decreasing"
    eos_weight: float = 1.0
    hard_weight: float = 0.0  # share of cross-entropy on the committed token, mixed with the KL
    freeze_vision: bool = True
    target_top_k: int = 16  # teacher tokens stored per position; 0: the committed token only (hard)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UserError(f"--target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.step_weighting not in STEP_WEIGHTS:
            raise UserError(f"--step-weighting must be one of {', '.join(STEP_WEIGHTS)}")
        if not 0.0 <= self.hard_weight <= 1.0:
            raise UserError(f"--hard-weight must be within [0, 1], not {self.hard_weight}")
        if self.target_top_k < 0:
            raise UserError(f"--target-top-k must be >= 0, got {self.target_top_k}")
        if self.rounds < 1 or self.collect_per_round < 1:
            raise UserError("--rounds and --collect-per-round must be at least 1")


@dataclass
class CollectStats:
    kept: int = 0
    no_eos: int = 0
    repetition: int = 0
    seconds: float = 0.0


def _context(batch: Batch) -> Context:
    return Context(batch.context_ids, batch.pixel_values, batch.image_grid_thw)


def trajectory_targets(blocks: list[BlockTrajectory]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens (L,), probs (L, V), commit steps (L,)) of one row's trajectory from the response
    start: window 0's head holds `prefix_len` context tokens (block-causal prompts), dropped."""
    prefix = blocks[0].prefix_len
    tokens = torch.cat([block.tokens for block in blocks])[prefix:]
    probs = torch.cat([block.probs for block in blocks])[prefix:]
    steps = torch.cat([block.commit_step for block in blocks])[prefix:]
    return tokens, probs, steps


@torch.inference_mode()
def collect(
    teacher,
    batcher: Batcher,
    indices: list[int],
    *,
    block_size: int,
    threshold: float,
    max_new_tokens: int,
    batch_size: int,
    eos_id: int,
    description: str,
    top_k: int = 16,
) -> tuple[Targets | None, CollectStats]:
    """Run the teacher on `indices` and keep its trajectories' pseudo-labels and commit-time targets.

    Targets start at the response start: with a block-causal prompt the first window's head holds
    the last context tokens (`prefix_len`), which are dropped. Each position keeps the teacher's
    `top_k` tokens at the step that committed it (0: the committed token alone)."""
    teacher.eval()
    stats = CollectStats()
    kept: list[tuple[int, torch.Tensor, SoftTargets, torch.Tensor]] = []
    started = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=len(indices))
        chunks = [
            group[start : start + batch_size]
            for group in shape_groups(batcher.examples.images, indices)
            for start in range(0, len(group), batch_size)
        ]
        for chunk in chunks:
            batch = batcher.make(chunk, pad_with=eos_id)
            result = decode_block_diffusion(
                teacher,
                _context(batch),
                block_size=block_size,
                max_new_tokens=max_new_tokens,
                remasking="low_confidence_dynamic",
                steps_per_block=block_size,
                threshold=threshold,
                record_trajectory=True,
            )
            assert result.trajectory is not None
            for row, blocks in enumerate(result.trajectory):
                tokens, probs, steps = trajectory_targets(blocks)
                if not (tokens == eos_id).any():
                    stats.no_eos += 1
                elif has_repetition_loop(result.tokens[row]):
                    stats.repetition += 1
                else:
                    kept.append((chunk[row], tokens, SoftTargets.from_dense(probs, top_k, tokens), steps))
            progress.advance(task, len(chunk))
    stats.kept = len(kept)
    stats.seconds = time.perf_counter() - started
    if not kept:
        return None, stats
    length = max(tokens.numel() for _, tokens, _, _ in kept)
    n = len(kept)
    response = torch.full((n, length), eos_id, dtype=torch.long)
    live = torch.zeros((n, length), dtype=torch.bool)
    soft = SoftTargets.empty((n, length), kept[0][2].k)
    commit = torch.zeros((n, length), dtype=torch.long)
    for row, (_, tokens, truncated, steps) in enumerate(kept):
        size = tokens.numel()
        response[row, :size], live[row, :size], commit[row, :size] = tokens, True, steps
        soft[row, :size] = truncated
    return Targets([index for index, *_ in kept], response, live, soft, commit), stats


@torch.inference_mode()
def factorise(
    teacher,
    batcher: Batcher,
    targets: Targets,
    *,
    mask_id: int,
    block_size: int,
    batch_size: int,
    top_k: int = 16,
) -> Targets:
    """Replace the stitched targets by the teacher's one-step marginals from the all-mask state
    (truncated to `top_k` as the stitched ones; 0: each marginal's argmax as a hard target)."""
    teacher.eval()
    stored = max(1, min(top_k, int(teacher.config.vocab_size)))  # what SoftTargets.from_dense keeps
    soft = SoftTargets.empty(tuple(targets.response_ids.shape), stored)
    for rows in _row_chunks(batcher, targets, batch_size, shuffle=None):
        batch = to_device(_with_labels(batcher, targets, rows), next(teacher.parameters()).device)
        all_masked = torch.ones_like(batch.response_ids, dtype=torch.bool)
        logits = rad_logits(teacher, batch, all_masked, mask_id, block_size)
        probs = torch.softmax(logits.float(), dim=-1)
        soft[rows] = SoftTargets.from_dense(probs, top_k, probs.argmax(-1))
    return Targets(
        targets.indices, targets.response_ids, targets.live, soft, torch.zeros_like(targets.commit_step)
    )


def _with_labels(batcher: Batcher, targets: Targets, rows) -> Batch:
    rows = list(rows)
    batch = batcher.make([targets.indices[r] for r in rows], pad_with=0)
    batch.response_ids = targets.response_ids[rows]
    batch.response_mask = targets.live[rows]
    return batch


def _row_chunks(
    batcher: Batcher, targets: Targets, batch_size: int, shuffle: np.random.Generator | None
) -> list[list[int]]:
    """Rows of `targets` in chunks of at most batch_size that share one image grid."""
    rows = range(len(targets.indices))
    order = shuffle.permutation(len(targets.indices)).tolist() if shuffle is not None else list(rows)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for row in order:
        by_shape.setdefault(batcher.examples.images[targets.indices[row]].shape, []).append(row)
    chunks = [g[s : s + batch_size] for g in by_shape.values() for s in range(0, len(g), batch_size)]
    return [chunks[i] for i in shuffle.permutation(len(chunks))] if shuffle is not None else chunks


def _item(batcher: Batcher, targets: Targets, rows: list[int]):
    """(batch with the pseudo-labels as response, soft targets, commit steps, live positions)."""
    return (
        _with_labels(batcher, targets, rows),
        targets.soft[rows],
        targets.commit_step[rows],
        targets.live[rows],
    )


def _target_batches(batcher: Batcher, targets: Targets, batch_size: int, seed: int):
    generator = np.random.default_rng(seed)
    while True:
        for rows in _row_chunks(batcher, targets, batch_size, generator):
            yield _item(batcher, targets, rows)


def run_dcd(teacher, student, tokenizer, args: DcdArgs, spec: GenerationSpec) -> dict[str, Any]:
    seed_everything(args.loop.seed)
    block_size = int(teacher.config.block_size)
    spec = GenerationSpec(
        **{**asdict(spec), "stage": "dcd", "decode": "onestep", "threshold": args.threshold}
    )
    train, val = make_batchers(student, tokenizer, spec, args.data, block_size)
    if args.freeze_vision:
        freeze_vision(student)
    scale = prepare_model(student, args.loop)
    prepare_frozen(teacher, args.loop)
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        student,
        args.out,
        args.loop,
        lambda m, d: save_checkpoint(m, tokenizer, spec, d),
        f"DCD ({args.target})",
        score=selection_score(student, tokenizer, spec, val, args.loop, args.batch_size),
    )

    def load_weights(directory: Path) -> None:
        from echo.model import EchoVLM

        student.load_state_dict(EchoVLM.from_pretrained(directory).state_dict())

    resumed = trainer.try_resume(load_weights)
    collect_options = dict(
        block_size=block_size,
        threshold=args.threshold,
        max_new_tokens=spec.max_new_tokens,
        batch_size=args.collect_batch_size,
        eos_id=tokenizer.eos_id,
        top_k=args.target_top_k,
    )

    def prepare(batcher: Batcher, indices: list[int], what: str) -> tuple[Targets, CollectStats]:
        targets, stats = collect(teacher, batcher, indices, description=what, **collect_options)
        if targets is None:
            raise UserError(f"the teacher produced no usable trajectory while {what}: is it trained?")
        if args.target == "factorised":
            targets = factorise(
                teacher,
                batcher,
                targets,
                mask_id=tokenizer.mask_id,
                block_size=block_size,
                batch_size=args.collect_batch_size,
                top_k=args.target_top_k,
            )
        return targets, stats

    val_targets, _ = prepare(
        val, list(range(min(args.val_collect, len(val)))), "collecting validation targets"
    )
    weighting = "uniform" if args.target == "factorised" else args.step_weighting

    def loss(model, item) -> torch.Tensor:
        batch, soft, commit, live = item
        return dcd_loss(
            model,
            batch,
            soft,
            commit,
            live,
            mask_id=tokenizer.mask_id,
            eos_id=tokenizer.eos_id,
            block_size=block_size,
            step_weighting=weighting,
            eos_weight=args.eos_weight,
            hard_weight=args.hard_weight,
        )

    val_items = [
        _item(val, val_targets, rows) for rows in _row_chunks(val, val_targets, args.batch_size, None)
    ]
    steps_per_round = -(-args.loop.steps // args.rounds)
    rounds: list[dict[str, Any]] = []
    generator = np.random.default_rng(args.loop.seed)
    draws = [
        generator.choice(len(train), size=min(args.collect_per_round, len(train)), replace=False)
        for _ in range(args.rounds)
    ]
    for round_index in range(trainer.state.step // steps_per_round, args.rounds):
        targets, stats = prepare(train, draws[round_index].tolist(), f"round {round_index + 1}: collecting")
        until = min(args.loop.steps, (round_index + 1) * steps_per_round)
        batches = _target_batches(
            train, targets, min(args.batch_size, len(targets.indices)), args.loop.seed + round_index
        )
        trainer.run(batches, loss, loss, val_items, until=until)
        rounds.append(
            {"round": round_index + 1, **asdict(stats), "until_step": until, "store_bytes": targets.nbytes}
        )
    metrics = {
        "stage": "dcd",
        "target": args.target,
        "resumed": resumed,
        "rounds": rounds,
        "steps": trainer.state.step,
        "best_val_loss": trainer.state.best_val_loss,
        **best_score_entry(trainer.state, args.loop),
        "history": trainer.state.history,
        "seconds": trainer.seconds,
        "args": asdict(args),
        "target_top_k": args.target_top_k,
        **scale,
        **peak_memory(resolve_device(args.loop.device)),
    }
    write_json(args.out / "metrics.json", metrics)
    return metrics
