"""`echo-admin retrain`: fine-tune a registered version on the site's exported data set, here or on a
`train` worker; the new student is exported, registered as a candidate and judged by the gate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from echo.errors import UserError
from node.config.startup import settings_for_cli
from node.ops.cli_support import ConfigOption
from node.ops.models_cli import admin_database, find, gate_progress, print_gate


def register(app: typer.Typer) -> None:
    app.command("retrain")(retrain)


def retrain(
    from_version: str = typer.Option(
        ..., "--from", metavar="MODEL_VERSION", help="the version whose checkpoints training starts from"
    ),
    data: Path = typer.Option(
        ...,
        "--data",
        metavar="MANIFEST",
        help="manifest.jsonl of `echo-admin dataset export` (train/val/test)",
    ),
    stages: str = typer.Option("dcd", "--stages", help="dcd | rad,dcd | ar,rad,dcd"),
    steps: int | None = typer.Option(None, "--steps", min=1, help="optimiser steps of every stage run"),
    ar_steps: int = typer.Option(2000, "--ar-steps", min=1, help="AR steps (unless --steps)"),
    rad_steps: int = typer.Option(2000, "--rad-steps", min=1, help="RAD steps (unless --steps)"),
    dcd_steps: int = typer.Option(1500, "--dcd-steps", min=1, help="DCD steps (unless --steps)"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="examples per step"),
    val_every: int | None = typer.Option(
        None, "--val-every", min=1, help="validate every N steps (min(steps, 250))"
    ),
    val_limit: int = typer.Option(64, "--val-limit", min=1, help="validation studies"),
    select_by: str = typer.Option("f1", "--select-by", help="which checkpoint a stage keeps: f1 or loss"),
    rounds: int = typer.Option(3, "--rounds", min=1, help="DCD collection / alignment rounds"),
    collect_per_round: int = typer.Option(
        512, "--collect-per-round", min=1, help="DCD teacher decodes per round"
    ),
    work: Path | None = typer.Option(
        None,
        "--work",
        metavar="DIR",
        help="work folder (default DATA_DIR/retrain/v<from>-<stages>); run again to resume",
    ),
    split: str = typer.Option("test", "--split", help="the held-out split the gate evaluates on"),
    margin: float | None = typer.Option(
        None, "--margin", min=0.0, help="a fixed gate margin (default: measured)"
    ),
    promote: bool = typer.Option(False, "--promote", help="promote the candidate if it passes the gate"),
    queue: bool = typer.Option(
        False, "--queue", help="send it to a `train` worker instead of running it here"
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Retrain: the echo-train stages from V's checkpoints (fine-tuning), the ONNX export, a candidate,
    the promotion gate. Resumable: run the same command again after an interruption. Exits 1 when the
    gate rejects the candidate."""
    from node.learning.retrain import RetrainOptions, parse_stages
    from node.learning.retrain import retrain as run_retrain

    if select_by not in ("f1", "loss"):
        raise UserError(f"--select-by {select_by!r}: use f1 or loss")
    chosen = parse_stages(stages)
    per_stage = {"ar": ar_steps, "rad": rad_steps, "dcd": dcd_steps}
    if steps is not None:
        per_stage = dict.fromkeys(per_stage, steps)
    settings = settings_for_cli(config)
    console = Console()
    with admin_database(settings, config) as database:
        with database.sessions() as session:
            parent = find(session, from_version)
        options = RetrainOptions(
            from_version=str(parent.id),
            data=data.resolve(),
            stages=chosen,
            steps=per_stage,
            batch_size=batch_size,
            val_every=val_every,
            val_limit=val_limit,
            select_by=select_by,
            dcd_rounds=rounds,
            collect_per_round=collect_per_round,
            work=work.resolve() if work is not None else None,
            split=split,
            margin=margin,
            promote=promote,
        )
        if queue:
            _send(settings, options.to_json(), console)
            return
        result = run_retrain(
            database.sessions,
            settings,
            options,
            say=lambda line: console.print(escape(line)),
            progress=gate_progress(Console(stderr=True)),
        )
    took = ", ".join(f"{what} {seconds / 60:.1f} min" for what, seconds in result.seconds.items())
    console.print(escape(f"work folder {result.work} ({took})"))
    print_gate(console, result.candidate_id, result.gate)
    if result.promoted:
        console.print(f"version {result.candidate_id} is serving now: workers switch before their next study")
    if not result.gate["passed"]:
        raise typer.Exit(1)


def _send(settings, options: dict, console: Console) -> None:
    from node.broker.app import TRAIN_QUEUE, create_app
    from node.broker.publish import CeleryPublisher

    try:
        task_id = CeleryPublisher(create_app(settings)).publish_retrain(options)
    except Exception as error:  # the broker's own exception types
        raise UserError(f"cannot send to the {TRAIN_QUEUE} queue: {type(error).__name__}: {error}") from None
    console.print(
        f"sent to the {TRAIN_QUEUE} queue (task {task_id}): a worker started with `echo-worker -Q {TRAIN_QUEUE}` "
        "runs it (its paths must be visible there); `echo-admin models` shows the candidate when it is done"
    )
