"""The stages' drivers: AR (stage 1) and RAD (stage 2) share data set-up and the loop.

DCD (stage 3) lives in `echo.training.dcd_stage` because it alternates collection and alignment.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from echo.errors import UserError
from echo.training.batches import Batcher
from echo.training.checkpoint import GenerationSpec, preprocess_config_of, save_checkpoint
from echo.training.examples import load_examples
from echo.training.findings_probe import ProbedModel, probe_loss, report_targets
from echo.training.loop import LoopConfig, Trainer, seed_everything, write_json
from echo.training.objectives import NoiseConfig, ar_loss, full_duplication_loss, rad_loss
from echo.training.scale import peak_memory, prepare_model, resolve_device
from echo.training.selection import best_score_entry, selection_score


@dataclass
class DataArgs:
    manifest: Path
    cache_dir: Path | None = None
    train_split: str = "train"
    val_split: str = "val"
    train_limit: int | None = None
    val_limit: int | None = 256
    max_response_tokens: int = 192
    stream_images: bool | None = None  # None: stream when the set is large (examples.load_examples)


@dataclass
class StageArgs:
    out: Path
    data: DataArgs
    loop: LoopConfig = field(default_factory=LoopConfig)
    batch_size: int = 16
    block_size: int = 8
    freeze_vision: bool = True
    duplicate: str = "response"  # RAD only: "response" (the paper) or "full" (the prior conversion)
    findings_weight: float = 0.0  # AR only: weight of the findings probe's loss (0: none)


def make_batchers(
    model, tokenizer, spec: GenerationSpec, data: DataArgs, block_size: int, finding_targets: bool = False
) -> tuple[Batcher, Batcher]:
    config = preprocess_config_of(model)
    train = load_examples(
        data.manifest, data.train_split, config, data.cache_dir, data.train_limit, data.stream_images
    )
    val = load_examples(
        data.manifest, data.val_split, config, data.cache_dir, data.val_limit, data.stream_images
    )
    make = lambda examples, targets=None: Batcher(  # noqa: E731
        examples,
        tokenizer,
        spec.prompt,
        config,
        block_size,
        data.max_response_tokens,
        targets,
        prompt_attention=model.config.prompt_attention,
    )
    # Only training reads the findings targets: validation is the plain next-token loss.
    return make(train, report_targets(train.reports) if finding_targets else None), make(val)


def freeze_vision(model) -> int:
    """Freeze the vision tower and its merger (the projector); returns how many tensors froze."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if name.startswith("visual."):
            parameter.requires_grad_(False)
            frozen += 1
    return frozen


def _run(
    model,
    tokenizer,
    spec: GenerationSpec,
    args: StageArgs,
    train_loss,
    val_loss,
    pad_with: int,
    description: str,
    extra: dict[str, Any] | None = None,
    probed: ProbedModel | None = None,
) -> dict[str, Any]:
    """Train `model` (or `probed`, the model with its findings probe, when given)."""
    seed_everything(args.loop.seed)
    train, val = make_batchers(
        model, tokenizer, spec, args.data, args.block_size, finding_targets=probed is not None
    )
    args.out.mkdir(parents=True, exist_ok=True)
    scale = prepare_model(model, args.loop)

    def save(trained, directory: Path) -> None:
        save_checkpoint(model, tokenizer, spec, directory)
        if probed is not None:
            probed.save_probe(directory)

    trainer = Trainer(
        probed or model,
        args.out,
        args.loop,
        save_model=save,
        description=description,
        score=selection_score(model, tokenizer, spec, val, args.loop, args.batch_size),
    )

    def load_weights(directory: Path) -> None:
        from echo.model import EchoVLM

        model.load_state_dict(EchoVLM.from_pretrained(directory).state_dict())
        if probed is not None:
            probed.load_probe(directory)

    resumed = trainer.try_resume(load_weights)
    val_batches = val.ordered(args.batch_size, pad_with)
    started = time.perf_counter()
    state = trainer.run(
        train.endless(args.batch_size, pad_with, args.loop.seed + trainer.state.step),
        train_loss,
        val_loss,
        val_batches,
    )
    metrics = {
        "stage": spec.stage,
        "resumed": resumed,
        "steps": state.step,
        "best_val_loss": state.best_val_loss,
        **best_score_entry(state, args.loop),
        "history": state.history,
        "seconds": time.perf_counter() - started,
        "train_examples": len(train),
        "val_examples": len(val),
        "args": asdict(args),
        **scale,
        **peak_memory(resolve_device(args.loop.device)),
        **(extra or {}),
    }
    write_json(args.out / "metrics.json", metrics)
    return metrics


def run_ar(model, tokenizer, args: StageArgs, spec: GenerationSpec) -> dict[str, Any]:
    spec = GenerationSpec(**{**asdict(spec), "stage": "ar", "decode": "ar"})
    if args.findings_weight < 0:
        raise UserError(f"--findings-weight must be >= 0, got {args.findings_weight}")
    if args.findings_weight == 0:
        return _run(model, tokenizer, spec, args, ar_loss, ar_loss, tokenizer.pad_id, "AR")
    weight = args.findings_weight

    def train_loss(probed: ProbedModel, batch) -> torch.Tensor:
        features = probed.vlm.encode_images(batch.pixel_values, batch.image_grid_thw)
        return ar_loss(probed.vlm, batch, features) + weight * probe_loss(
            probed, features, batch.finding_targets
        )

    def val_loss(probed: ProbedModel, batch) -> torch.Tensor:  # the plain AR loss: comparable runs
        return ar_loss(probed.vlm, batch)

    return _run(
        model,
        tokenizer,
        spec,
        args,
        train_loss,
        val_loss,
        tokenizer.pad_id,
        "AR + findings probe",
        {"findings_weight": weight},
        probed=ProbedModel(model),
    )


def run_rad(model, tokenizer, args: StageArgs, spec: GenerationSpec) -> dict[str, Any]:
    if args.block_size < 1:
        raise UserError("block size must be positive")
    model.config.block_size = args.block_size
    spec = GenerationSpec(**{**asdict(spec), "stage": "rad", "decode": "multistep"})
    frozen = freeze_vision(model) if args.freeze_vision else 0
    noise = NoiseConfig(block_size=args.block_size, mask_id=tokenizer.mask_id)
    loss = rad_loss if args.duplicate == "response" else full_duplication_loss
    if args.duplicate not in ("response", "full"):
        raise UserError(f"--duplicate must be 'response' or 'full', not {args.duplicate!r}")
    val_generator = torch.Generator().manual_seed(1234)

    def val_loss(m, batch):  # the same noise draw for every validation pass: comparable numbers
        val_generator.manual_seed(1234 + batch.indices[0])
        return loss(m, batch, noise, val_generator)

    return _run(
        model,
        tokenizer,
        spec,
        args,
        lambda m, batch: loss(m, batch, noise),
        val_loss,
        tokenizer.eos_id,
        f"RAD ({args.duplicate})",
        {"frozen_tensors": frozen, "duplicate": args.duplicate},
    )
