"""The training loop every stage shares: optimiser, schedule, progress, validation, checkpoints, resume.

A stage supplies two callables: ``train_loss(model, batch) -> Tensor`` and ``val_loss(model, batch)``.
The loop owns everything else, so AR, RAD and DCD differ only in how a batch becomes a loss.

Checkpoints: ``out/last/`` (model + ``trainer.pt`` with optimiser, schedule, step and RNG states) is
rewritten every ``checkpoint_every`` steps and at the end; ``out/best/`` holds the weights with the
lowest validation loss, or, when the stage gives a ``score`` (``--select-by f1``), the highest score.
Starting again with the same ``out`` resumes from ``out/last``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from echo.errors import UserError
from echo.training.scale import (
    autocast,
    check_precision,
    has_lora,
    resolve_device,
    to_device,
    trainable_state,
)

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
ScoreFn = Callable[[], float]  # higher is better: findings F1 of the model's own reports


@dataclass
class LoopConfig:
    steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_every: int = 200
    checkpoint_every: int = 200
    seed: int = 0
    select_by: str = "loss"  # "f1": out/best is the checkpoint whose reports score best (selection.py)
    device: str = "cpu"  # cpu | cuda | cuda:N: model, batches (and DCD's teacher) live there
    precision: str = "fp32"  # bf16: autocast on the device; fp32 master weights unless LoRA
    gradient_checkpointing: bool = False  # recompute layer activations in the backward pass
    lora_rank: int = 0  # > 0: train LoRA adapters of this rank on the decoder only (scale.add_lora)
    lora_alpha: float = 0.0  # 0: 2 * rank
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        from echo.training.selection import check_select_by

        check_select_by(self.select_by)
        check_precision(self.precision)
        resolve_device(self.device)
        if self.lora_rank < 0:
            raise UserError(f"--lora-rank must be >= 0, got {self.lora_rank}")


@dataclass
class LoopState:
    step: int = 0
    best_val_loss: float = math.inf
    best_score: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cosine_lr(step: int, config: LoopConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class Trainer:
    """Runs ``train_loss`` for ``config.steps`` steps over an endless batch iterator."""

    def __init__(
        self,
        model: torch.nn.Module,
        out_dir: Path,
        config: LoopConfig,
        save_model: Callable[[torch.nn.Module, Path], None],
        description: str,
        score: ScoreFn | None = None,
    ) -> None:
        self.model = model
        self.score = score
        self.out_dir = out_dir
        self.config = config
        self.save_model = save_model
        self.description = description
        self.device = resolve_device(config.device)
        model.to(self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise UserError("nothing to train: every parameter is frozen")
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
            betas=(0.9, 0.95),
        )
        self.state = LoopState()

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def last_dir(self) -> Path:
        return self.out_dir / "last"

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"

    def _write_checkpoint(self, target: Path, with_trainer: bool) -> None:
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.save_model(self.model, tmp)
        if with_trainer:
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "state": asdict(self.state),
                    "rng": _rng_state(),
                    "config": asdict(self.config),
                    # LoRA: the saved model is merged, so the adapters travel here for a resume
                    "trainable": trainable_state(self.model) if has_lora(self.model) else None,
                },
                tmp / "trainer.pt",
            )
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)  # a crash mid-write leaves the previous checkpoint whole

    def try_resume(self, load_weights: Callable[[Path], None]) -> bool:
        trainer_file = self.last_dir / "trainer.pt"
        if not trainer_file.is_file():
            return False
        saved = torch.load(trainer_file, weights_only=False, map_location="cpu")
        if saved.get("trainable") is not None:  # LoRA: the base is the one we started from
            missing = set(saved["trainable"]) - set(dict(self.model.named_parameters()))
            if missing:
                raise UserError(
                    f"{trainer_file} holds adapters this model lacks: rerun with its LoRA options"
                )
            self.model.load_state_dict(saved["trainable"], strict=False)
        elif has_lora(self.model):
            raise UserError(f"{self.last_dir} was trained without LoRA: resume it without --lora-rank")
        else:
            load_weights(self.last_dir)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = LoopState(**saved["state"])
        _set_rng_state(saved["rng"])
        return True

    # -- the loop ----------------------------------------------------------------------------
    def evaluate(self, val_loss: LossFn, val_batches: list[Any]) -> float:
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.config.precision):
            losses = [float(val_loss(self.model, to_device(batch, self.device))) for batch in val_batches]
        self.model.train()
        return sum(losses) / max(1, len(losses))

    def _validated(self, entry: dict[str, float]) -> bool:
        """Record a validation in the state (and `entry`); True when it is the best so far."""
        loss_improved = entry["val_loss"] < self.state.best_val_loss
        self.state.best_val_loss = min(self.state.best_val_loss, entry["val_loss"])
        if self.score is None:
            return loss_improved
        self.model.eval()
        entry["val_f1"] = value = float(self.score())
        self.model.train()
        if value <= self.state.best_score:
            return False
        self.state.best_score = value
        return True

    def _score_text(self) -> str:
        last = self.state.history[-1] if self.state.history else {}
        return f" f1 {last['val_f1']:.4f}" if "val_f1" in last else ""

    def run(
        self,
        batches: Iterator[Any],
        train_loss: LossFn,
        val_loss: LossFn,
        val_batches: list[Any],
        until: int | None = None,
    ) -> LoopState:
        """Train up to step ``until`` (default: ``config.steps``); DCD calls this once per round."""
        config = self.config
        stop = config.steps if until is None else min(until, config.steps)
        self.model.train()
        columns = (
            TextColumn(f"[bold]{self.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} val {task.fields[val]:.4f}"),
            TimeRemainingColumn(),
        )
        last_val = self.state.history[-1]["val_loss"] if self.state.history else math.nan
        running = math.nan
        started = time.perf_counter()
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(
                "train", total=config.steps, completed=self.state.step, loss=running, val=last_val
            )
            while self.state.step < stop:
                lr = cosine_lr(self.state.step, config)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                with autocast(self.device, self.config.precision):
                    loss = train_loss(self.model, to_device(next(batches), self.device))
                if not torch.isfinite(loss):
                    raise RuntimeError(
                        f"loss is {float(loss)} at step {self.state.step}: lower the learning rate"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                self.optimizer.step()
                self.state.step += 1
                value = float(loss.detach())
                running = value if math.isnan(running) else 0.95 * running + 0.05 * value
                done = self.state.step == stop
                if self.state.step % config.val_every == 0 or done:
                    last_val = self.evaluate(val_loss, val_batches)
                    entry = {"step": self.state.step, "train_loss": running, "val_loss": last_val, "lr": lr}
                    if self._validated(entry):
                        self._write_checkpoint(self.best_dir, with_trainer=False)
                    self.state.history.append(entry)
                if self.state.step % config.checkpoint_every == 0 or done:
                    self._write_checkpoint(self.last_dir, with_trainer=True)
                progress.update(task, completed=self.state.step, loss=running, val=last_val)
                if not progress.console.is_terminal and self.state.step % config.val_every == 0:
                    # No live bar in a log file: one line per validation instead.
                    progress.console.print(
                        f"{self.description} step {self.state.step}/{config.steps} loss {running:.4f} "
                        f"val {last_val:.4f}{self._score_text()} lr {lr:.2e} "
                        f"{time.perf_counter() - started:.0f}s"
                    )
        self.seconds = getattr(self, "seconds", 0.0) + time.perf_counter() - started
        return self.state


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.rename(path)
