"""`echo-admin models / register / gate / promote / rollback` (and `retrain`, in retrain_cli): the model
registry and its promotion gate, from the operator's side."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from echo.errors import UserError
from node.config.settings import Settings
from node.config.startup import settings_for_cli
from node.ops.cli_support import ConfigOption, database_error, open_admin_database
from node.ops.import_cli import progress_bar
from node.ops.tables import Column, output_console, print_fitted
from node.store.database import Database
from node.store.model_versions import ModelVersionRow, UnknownVersion, find_version, list_model_versions
from node.store.models import ModelVersion

SWITCH_NOTE = "workers switch before their next study (within a few seconds), without a restart"
VersionArgument = typer.Argument(..., metavar="V", help="model version: its id, its version or its start")


def register(app: typer.Typer) -> None:
    """Add this module's commands to echo-admin (`retrain` is retrain_cli's)."""
    app.command("models")(models)
    app.command("register")(register_export)
    app.command("gate")(gate)
    app.command("promote")(promote)
    app.command("rollback")(rollback)


@contextmanager
def admin_database(settings: Settings, config: Path | None) -> Iterator[Database]:
    database = open_admin_database(settings, config)
    try:
        yield database
    except SQLAlchemyError as error:
        raise database_error(settings, error) from None
    finally:
        database.dispose()


def find(session: Session, reference: str) -> ModelVersion:
    try:
        return find_version(session, reference)
    except UnknownVersion as error:
        raise UserError(str(error)) from None


def gate_progress(console: Console) -> Callable[[str, int], Callable[[int], None]]:
    """A progress bar per piece of long work (each model's drafting), shown only while it runs."""

    def start(description: str, total: int) -> Callable[[int], None]:
        bar = progress_bar(console)
        task = bar.add_task(description, total=total)
        bar.start()

        def advance(n: int) -> None:
            bar.advance(task, n)
            if bar.tasks[0].completed >= total:
                bar.stop()

        if total == 0:
            bar.stop()
        return advance

    return start


# ---- what the operator reads -------------------------------------------------------------------


def gate_lines(gate: dict[str, Any]) -> list[str]:
    """The gate's figures and decision, a few lines."""
    checks, margins = gate["checks"], gate["margins"]
    ours, theirs = gate["candidate"], gate["serving"]
    held = gate.get("held_out") or {}
    verdict = "PASSED" if gate["passed"] else "REJECTED"
    lines = [
        f"gate {verdict} on {ours['studies']} held-out studies ({held.get('split', '?')} split of "
        f"{held.get('manifest', '?')}), against version {theirs.get('model_version_id')} ({theirs['version']})",
        f"  F1            {ours['f1']:.3f} vs {theirs['f1']:.3f}  (margin {margins['f1']:.3f})  "
        f"{'ok' if checks['f1']['passed'] else 'FAIL'}",
        f"  FP / normal   {ours['fp_per_normal']:.3f} vs {theirs['fp_per_normal']:.3f}  "
        f"(margin {margins['fp_per_normal']:.3f}, {ours['normal_studies']} normal studies)  "
        f"{'ok' if checks['fp_per_normal']['passed'] else 'FAIL'}",
        f"  tokens/fwd    {ours['tokens_per_forward']:.2f} vs {theirs['tokens_per_forward']:.2f}  "
        f"(>= {0.9 * ours['block_size']:.2f})  {'ok' if checks['tokens_per_forward']['passed'] else 'FAIL'}",
        f"  parity        {checks['parity'].get('detail', '')}  {'ok' if checks['parity']['passed'] else 'FAIL'}",
        f"  precision / recall {ours['precision']:.3f} / {ours['recall']:.3f} "
        f"(serving {theirs['precision']:.3f} / {theirs['recall']:.3f})",
        f"  margins: {margins['how']}",
    ]
    lines += [f"  note: {note}" for note in gate.get("notes") or []]
    lines += [f"  reason: {reason}" for reason in gate.get("reasons") or []]
    return lines


def _training_line(row: ModelVersionRow) -> str | None:
    training = row.training or {}
    if not training.get("stages"):
        return None
    steps = ", ".join(f"{stage} {training['steps'].get(stage)}" for stage in training["stages"])
    seconds = sum((training.get("seconds") or {}).values())
    return (
        f"version {row.id}: retrained from version {training.get('from')} ({steps} steps, "
        f"{seconds / 60:.1f} min), checkpoints in {training.get('work')}"
    )


def models(
    as_json: bool = typer.Option(False, "--json", help="print every version as JSON, gate figures included"),
    config: Path | None = ConfigOption,
) -> None:
    """Model versions: their role (serving, candidate, retired, rejected, registered), the version they
    were retrained from, the reports each wrote, and the promotion gate's figures."""
    settings = settings_for_cli(config)
    with admin_database(settings, config) as database, database.sessions() as session:
        rows = list_model_versions(session)
    if as_json:
        print(json.dumps([_as_dict(row) for row in rows], indent=2, default=str))
        return
    console = output_console()
    if not rows:
        console.print("no model versions yet: a worker registers its model with the first study it reports")
        return
    print_fitted(console, "Model versions", MODEL_COLUMNS, [model_cells(row) for row in rows])
    console.print("active: the version a worker loaded last; serving: the promoted one workers switch to")
    for row in rows:
        if (line := _training_line(row)) is not None:
            console.print(escape(line))
        if row.gate:
            console.print(escape(f"version {row.id}:"))
            for line in gate_lines(row.gate):
                console.print(escape(line))


MODEL_COLUMNS = (
    Column("id", keep=9),
    Column("name", keep=3),
    Column("version", keep=8),
    Column("role", keep=9),
    Column("from", keep=5),
    Column("block", keep=1),
    Column("reports", keep=6),
    Column("registered", keep=2),
    Column("promoted", keep=4),
    Column("active", keep=7),
    Column("path", flexible=True, cut="start", cut_hint="echo-admin models --json shows whole paths"),
)


def model_cells(row: ModelVersionRow) -> tuple[str, ...]:
    return (
        str(row.id),
        row.name,
        row.version,
        row.role,
        str(row.parent_id) if row.parent_id is not None else "-",
        str(row.block_size),
        str(row.reports),
        _when(row.created_at),
        _when(row.promoted_at),
        "yes" if row.active else "",
        row.path,
    )


def _when(value: Any) -> str:
    from node.ops.study_detail_view import when

    return when(value)


def _as_dict(row: ModelVersionRow) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(row)


def register_export(
    export: Path = typer.Argument(..., metavar="DIR", help="an exported model directory (echo-train export)"),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", metavar="DIR", help="the student checkpoint it was exported from (for parity)"
    ),
    parent: str | None = typer.Option(None, "--from", metavar="V", help="the version it was retrained from"),
    config: Path | None = ConfigOption,
) -> None:
    """Register an export made elsewhere (a GPU host) as a candidate; `echo-admin gate` then judges it."""
    from node.learning.registry import register_candidate

    if checkpoint is not None and not (checkpoint / "config.json").is_file():
        raise UserError(f"--checkpoint {checkpoint} is not a checkpoint directory (no config.json)")
    settings = settings_for_cli(config)
    with admin_database(settings, config) as database, database.sessions.begin() as session:
        parent_id = find(session, parent).id if parent is not None else None
        training = {"checkpoints": {"student": str(checkpoint.resolve())}} if checkpoint else None
        row = register_candidate(session, settings, export, parent_id=parent_id, training=training)
        row_id, path = row.id, row.path
    Console().print(
        f"registered candidate version {row_id} ({path}); next: echo-admin gate {row_id} --data MANIFEST"
    )


def gate(
    reference: str = VersionArgument,
    data: Path = typer.Option(..., "--data", metavar="MANIFEST", help="manifest.jsonl with held-out studies"),
    split: str = typer.Option("test", "--split", help="the manifest's held-out split ('all': every study)"),
    margin: float | None = typer.Option(
        None, "--margin", min=0.0, help="a fixed margin instead of the measured noise of the held-out set"
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Run the promotion gate: the candidate and the serving model on the same held-out studies.
    Exits 1 when the candidate is rejected."""
    from node.learning.gate import run_gate

    settings = settings_for_cli(config)
    console = Console()
    with admin_database(settings, config) as database:
        with database.sessions() as session:
            candidate_id = find(session, reference).id
        figures = run_gate(
            database.sessions,
            settings,
            candidate_id,
            data,
            split=None if split == "all" else split,
            fixed_margin=margin,
            progress=gate_progress(Console(stderr=True)),
        )
    print_gate(console, candidate_id, figures)
    if not figures["passed"]:
        raise typer.Exit(1)


def print_gate(console: Console, candidate_id: int, figures: dict[str, Any]) -> None:
    console.print(escape(f"candidate version {candidate_id}:"))
    for line in gate_lines(figures):
        console.print(escape(line))
    if figures["passed"]:
        console.print(f"next: echo-admin promote {candidate_id}")


def promote(
    reference: str = VersionArgument,
    force: bool = typer.Option(
        False, "--force", help="promote a version the gate rejected or never judged (recorded with it)"
    ),
    reason: str | None = typer.Option(None, "--reason", help="why, for the promotion history"),
    config: Path | None = ConfigOption,
) -> None:
    """Serve version V: the workers switch to it before their next study; the one it replaces is retired."""
    from node.learning.registry import promote as promote_version

    settings = settings_for_cli(config)
    with admin_database(settings, config) as database, database.sessions.begin() as session:
        done = promote_version(session, find(session, reference), reason, force=force)
    replaced = f", replacing version {done.previous_id}" if done.previous_id is not None else ""
    console = Console()
    console.print(f"version {done.model_version_id} is serving now{replaced}: {SWITCH_NOTE}")
    if done.forced:
        console.print(escape(f"forced: {done.reason}"))


def rollback(
    reason: str | None = typer.Option(None, "--reason", help="why, for the promotion history"),
    config: Path | None = ConfigOption,
) -> None:
    """Serve again the version served before the current one (the promotion history says which)."""
    from node.learning.registry import rollback as roll_back

    settings = settings_for_cli(config)
    with admin_database(settings, config) as database, database.sessions.begin() as session:
        done = roll_back(session, reason)
    Console().print(
        f"version {done.model_version_id} is serving again (rolled back from version {done.previous_id}): "
        f"{SWITCH_NOTE}"
    )
