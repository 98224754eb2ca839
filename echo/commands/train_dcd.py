"""`echo-train dcd`: stage 3, Direct Conditional Distillation of a one-step-per-block student."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echo.commands._training_options import (
    BatchSize,
    CacheDir,
    Data,
    Device,
    GradientCheckpointing,
    LoraAlpha,
    LoraRank,
    LoraTargets,
    Lr,
    Out,
    Precision,
    Seed,
    SelectBy,
    Steps,
    StreamImages,
    TrainLimit,
    ValEvery,
    ValLimit,
    best_text,
    check_positive,
    data_args,
    loop_config,
    scale_options,
)
from echo.errors import UserError


def check_same_model(teacher, tokenizer, student, student_tokenizer) -> None:
    """A student to fine-tune must share the teacher's architecture and vocabulary, or its targets
    (the teacher's distributions over the teacher's tokens) mean nothing to it."""
    if student_tokenizer.backend.get_vocab() != tokenizer.backend.get_vocab():
        raise UserError(
            "--student has another tokenizer than --teacher: distil from a teacher of the same vocabulary"
        )
    if layer_shapes(teacher) != layer_shapes(student):
        raise UserError(
            "--student has another architecture than --teacher (its weights do not match in shape)"
        )


def layer_shapes(model) -> set[tuple[str, tuple[int, ...]]]:
    """(name, shape) of each weight, a decoder layer's named without its index: a deeper student made
    by `--student-layers` (echo.training.deepen) has the teacher's, and is fine-tuned as such."""
    shapes = set()
    for name, weight in model.state_dict().items():
        if name.startswith("model.layers."):
            name = "model.layers.*." + name.split(".", 3)[3]
        shapes.add((name, tuple(weight.shape)))
    return shapes


def command(
    teacher: Annotated[Path, typer.Option(help="the RAD teacher checkpoint directory")],
    data: Data,
    out: Out,
    rounds: Annotated[int, typer.Option(help="collection / alignment rounds")] = 3,
    collect_per_round: Annotated[
        int, typer.Option(help="training inputs the teacher decodes per round")
    ] = 512,
    threshold: Annotated[float, typer.Option(help="teacher's low_confidence_dynamic tau")] = 0.85,
    target: Annotated[
        str, typer.Option(help="'stitched' (DCD) or 'factorised' (the mean-field baseline)")
    ] = "stitched",
    step_weighting: Annotated[str, typer.Option(help="uniform | decreasing | increasing")] = "decreasing",
    eos_weight: Annotated[float, typer.Option(help="weight of the cross-entropy term on <eos>")] = 1.0,
    target_top_k: Annotated[
        int,
        typer.Option(
            help="teacher tokens kept per position (with the rest of its mass in one bucket); "
            "0: the committed token only, as a hard target"
        ),
    ] = 16,
    hard_weight: Annotated[
        float, typer.Option(help="share of cross-entropy on the committed token mixed with the KL, 0-1")
    ] = 0.0,
    student: Annotated[
        Path | None,
        typer.Option(
            help="start the student from this checkpoint (a served student: fine-tuning); default: the teacher"
        ),
    ] = None,
    student_layers: Annotated[
        int | None,
        typer.Option(
            help="a deeper student: this many decoder layers, the added ones starting as the identity "
            "(echo.training.deepen); default: the teacher's depth"
        ),
    ] = None,
    train_vision: Annotated[
        bool, typer.Option(help="train the vision tower too (frozen by default)")
    ] = False,
    steps: Steps = 1500,
    batch_size: BatchSize = 16,
    lr: Lr = 5e-4,
    seed: Seed = 0,
    val_every: ValEvery = 250,
    train_limit: TrainLimit = None,
    val_limit: ValLimit = 128,
    cache_dir: CacheDir = None,
    select_by: SelectBy = "loss",
    device: Device = "cpu",
    precision: Precision = "fp32",
    gradient_checkpointing: GradientCheckpointing = False,
    lora_rank: LoraRank = 0,
    lora_alpha: LoraAlpha = 0.0,
    lora_targets: LoraTargets = "q_proj,k_proj,v_proj,o_proj",
    stream_images: StreamImages = None,
) -> None:
    """Distil a student that writes a whole block per forward pass from the teacher's own trajectories."""
    from echo.training.checkpoint import load_checkpoint
    from echo.training.dcd_stage import DcdArgs, run_dcd
    from echo.training.scale import weights_dtype

    check_positive(steps=steps, batch_size=batch_size, lr=lr, val_every=val_every, rounds=rounds)
    loop = loop_config(
        steps=steps,
        lr=lr,
        seed=seed,
        val_every=val_every,
        select_by=select_by,
        warmup_steps=min(50, steps // 10),
        **scale_options(locals()),
    )
    teacher_model, tokenizer, spec = load_checkpoint(teacher, weights_dtype(loop, trains=False))
    # The student starts from the teacher (the paper), or from a served student to fine-tune it.
    student_model, student_tokenizer, _ = load_checkpoint(
        student or teacher, weights_dtype(loop, trains=True)
    )
    check_same_model(teacher_model, tokenizer, student_model, student_tokenizer)
    if student_layers is not None:
        from echo.training.deepen import deepen

        student_model = deepen(student_model, student_layers)
    args = DcdArgs(
        out=out,
        data=data_args(
            data,
            out,
            cache_dir,
            train_limit=train_limit,
            val_limit=val_limit,
            max_response_tokens=spec.max_new_tokens,
            stream_images=stream_images,
        ),
        loop=loop,
        rounds=rounds,
        collect_per_round=collect_per_round,
        val_collect=val_limit,
        batch_size=batch_size,
        threshold=threshold,
        target=target,
        step_weighting=step_weighting,
        eos_weight=eos_weight,
        hard_weight=hard_weight,
        freeze_vision=not train_vision,
        target_top_k=target_top_k,
    )
    metrics = run_dcd(teacher_model, student_model, tokenizer, args, spec)
    kept = sum(r["kept"] for r in metrics["rounds"])
    typer.echo(
        f"DCD ({target}): {metrics['steps']} steps, {kept} trajectories kept, "
        f"{best_text(metrics)} -> {out / 'best'}"
    )
