"""Retraining on the site's data: the echo-train stages from a registered version's checkpoints, the
export, a candidate, the gate.

    retrain(sessions, settings, RetrainOptions(from_version="3", data=Path("export/manifest.jsonl")))

The stages run as `echo-train` child processes (the node never imports torch), in a work folder:

    WORK/retrain.json        what this run is (from, data, stages, steps ...), and each stage's seconds
    WORK/ar|rad|dcd/         each stage's out: last/ (resumable), best/, metrics.json when finished
    WORK/export/             the ONNX export of dcd/best
    WORK/.cache/             preprocessed images, shared by the stages

Fine-tuning, not from scratch: `ar` continues the version's AR checkpoint; `rad` continues the
version's teacher (or, after `ar`, converts the new AR model); `dcd` distils a new student from the
version's teacher (or the new one): with the version's teacher the version's own student is fine-tuned
(`--student`); after `rad` the student starts from the new teacher, as the stage does.

Resumable: a stage whose metrics.json records its steps is skipped; an interrupted one is run again
with the same out folder and resumes from its last checkpoint; an export of dcd/best is not made
twice; a candidate gated on the same data is not gated again. A second run with other options in the
same folder is refused (it would mix two runs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError
from node.config.settings import Settings
from node.learning.gate import ProgressFactory, check_manifest, no_progress, run_gate
from node.learning.parity import provenance_problem
from node.learning.registry import checkpoints_of, promote, register_candidate
from node.store.model_versions import UnknownVersion, find_version
from node.store.models import ModelVersion, utcnow
from node.store.states import ModelRole

STAGE_SETS: dict[str, tuple[str, ...]] = {
    "dcd": ("dcd",),
    "rad,dcd": ("rad", "dcd"),
    "ar,rad,dcd": ("ar", "rad", "dcd"),
}
RETRAIN_FOLDER = "retrain"
STATE_FILE = "retrain.json"
EXPORT_FOLDER = "export"

Runner = Callable[[list[str]], int]  # runs a command, returns its exit status
Say = Callable[[str], None]


def run_command(command: list[str]) -> int:
    """Run a child process with this terminal (its progress bars show); its exit status."""
    return subprocess.run(command, check=False).returncode


def echo_train(*args: str) -> list[str]:
    """`echo-train ARGS` with this interpreter (the same installation as the node)."""
    return [sys.executable, "-m", "echo.cli", *args]


def parse_stages(text: str) -> tuple[str, ...]:
    key = ",".join(part.strip().lower() for part in text.split(",") if part.strip())
    if key not in STAGE_SETS:
        raise UserError(f"--stages {text!r}: use one of {' | '.join(STAGE_SETS)}")
    return STAGE_SETS[key]


@dataclass(frozen=True)
class RetrainOptions:
    from_version: str  # an id, a version or its start (`echo-admin models`)
    data: Path  # manifest.jsonl of the exported data set
    stages: tuple[str, ...] = ("dcd",)
    steps: dict[str, int] = field(default_factory=lambda: {"ar": 2000, "rad": 2000, "dcd": 1500})
    batch_size: int = 16
    val_every: int | None = None  # None: min(steps, 250)
    val_limit: int = 64
    select_by: str = "f1"
    dcd_rounds: int = 3
    collect_per_round: int = 512
    work: Path | None = None  # None: DATA_DIR/retrain/v<from id>-<stages>
    split: str = "test"  # the held-out split the gate evaluates on ("all": every study)
    margin: float | None = None  # None: the gate's measured margin
    promote: bool = False  # promote the candidate when it passes the gate

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values.update(
            data=str(self.data), work=str(self.work) if self.work else None, stages=list(self.stages)
        )
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RetrainOptions:
        values = dict(values)
        values["data"] = Path(values["data"])
        values["work"] = Path(values["work"]) if values.get("work") else None
        values["stages"] = tuple(values["stages"])
        return cls(**values)

    @property
    def held_out_split(self) -> str | None:
        return None if self.split == "all" else self.split

    def run_key(self, parent_id: int) -> dict[str, Any]:
        """What makes two invocations the same run (what the work folder must have been made with)."""
        return {
            "from": parent_id,
            "data": str(self.data.resolve()),
            "stages": list(self.stages),
            "steps": {stage: self.steps[stage] for stage in self.stages},
            "batch_size": self.batch_size,
            "val_every": self.val_every,
            "val_limit": self.val_limit,
            "select_by": self.select_by,
            "dcd_rounds": self.dcd_rounds,
            "collect_per_round": self.collect_per_round,
        }


@dataclass(frozen=True)
class RetrainResult:
    candidate_id: int
    gate: dict[str, Any]
    promoted: bool
    work: Path
    seconds: dict[str, float]


class Retraining:
    """One run: the stages, the export, the candidate, the gate."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        options: RetrainOptions,
        *,
        runner: Runner | None = None,
        say: Say = print,
        progress: ProgressFactory = no_progress,
        gate: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.options = options
        self.runner = runner or run_command
        self.say = say
        self.progress = progress
        self.gate = gate or run_gate

    def run(self) -> RetrainResult:
        options = self.options
        with self.sessions() as session:
            parent = _find(session, options.from_version)
            parent_id, parent_name, parent_version = parent.id, parent.name, parent.version
            parent_block = parent.block_size
            checkpoints = checkpoints_of(parent)
        self._check_inputs(parent_id, checkpoints)
        work = (
            options.work
            or self.settings.data_dir / RETRAIN_FOLDER / f"v{parent_id}-{'-'.join(options.stages)}"
        )
        state = self._open_state(work, parent_id)
        outputs = dict(checkpoints)
        for number, stage in enumerate(options.stages, 1):
            outputs[{"ar": "ar", "rad": "teacher", "dcd": "student"}[stage]] = work / stage / "best"
            self._stage(work, state, number, stage, checkpoints, parent_block)
        export = work / EXPORT_FOLDER
        self._export(work, state, export, outputs["student"], outputs.get("teacher"), parent_name)
        training = {
            "from": parent_id,
            "from_version": parent_version,
            "stages": list(options.stages),
            "steps": {stage: options.steps[stage] for stage in options.stages},
            "data": str(options.data.resolve()),
            "work": str(work.resolve()),
            "checkpoints": {stage: str(Path(path).resolve()) for stage, path in outputs.items()},
            "seconds": state["seconds"],
            "finished_at": utcnow().isoformat(),
        }
        with self.sessions.begin() as session:
            candidate = register_candidate(
                session, self.settings, export, parent_id=parent_id, training=training
            )
            candidate_id, gate = candidate.id, candidate.gate
        self.say(f"registered candidate version {candidate_id} (from version {parent_id})")
        held_out = str(options.data.resolve())
        if gate is None or (gate.get("held_out") or {}).get("manifest") != held_out:
            self.say(f"promotion gate: the candidate and the serving model on the {options.split!r} split")
            gate = self.gate(
                self.sessions,
                self.settings,
                candidate_id,
                options.data,
                split=options.held_out_split,
                fixed_margin=options.margin,
                progress=self.progress,
            )
        else:
            self.say("promotion gate: already run on this data (figures below)")
        promoted = False
        if options.promote and gate["passed"]:
            with self.sessions.begin() as session:
                row = session.get_one(ModelVersion, candidate_id)
                if row.role != ModelRole.SERVING:
                    promote(session, row, f"retrained from version {parent_id}; gate passed")
                    promoted = True
        return RetrainResult(candidate_id, gate, promoted, work, dict(state["seconds"]))

    # ---- the parts ------------------------------------------------------------------------------

    def _check_inputs(self, parent_id: int, checkpoints: dict[str, Path]) -> None:
        options = self.options
        from echo.data.manifest import read_manifest

        if not options.data.is_file():
            raise UserError(f"--data {options.data} does not exist (`echo-admin dataset export` writes one)")
        splits = [row.split for row in read_manifest(options.data)]
        for needed in ("train", "val"):
            if needed not in splits:
                raise UserError(f"--data {options.data} has no {needed!r} studies: echo-train needs both")
        check_manifest(options.data, options.held_out_split)
        for stage, wanted in parent_starts(options.stages):
            path = checkpoints.get(wanted)
            if path is None or not (path / "config.json").is_file():
                raise UserError(
                    f"version {parent_id} has no {wanted} checkpoint to start {stage} from"
                    + (f" ({path} is gone)" if path is not None else "")
                    + ": retrain from a version that records its checkpoints (see `echo-admin models`)"
                )
        for stage in options.stages:
            if options.steps.get(stage, 0) < 1:
                raise UserError(f"--steps for {stage} must be at least 1")

    def _open_state(self, work: Path, parent_id: int) -> dict[str, Any]:
        key = self.options.run_key(parent_id)
        path = work / STATE_FILE
        if path.is_file():
            state = json.loads(path.read_text(encoding="utf-8"))
            if state.get("run") != key:
                differs = sorted(k for k in key if (state.get("run") or {}).get(k) != key[k])
                raise UserError(
                    f"{work} holds a retraining run with other options ({', '.join(differs)}): "
                    "give another --work, or remove that folder to start over"
                )
            self.say(f"resuming the retraining run in {work}")
            return state
        work.mkdir(parents=True, exist_ok=True)
        state = {"run": key, "seconds": {}}
        self._save(work, state)
        return state

    def _save(self, work: Path, state: dict[str, Any]) -> None:
        path = work / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    def _timed(self, work: Path, state: dict[str, Any], what: str, command: list[str], failure: str) -> None:
        started = time.monotonic()
        try:
            status = self.runner(command)
        finally:
            state["seconds"][what] = round(state["seconds"].get(what, 0.0) + time.monotonic() - started, 1)
            self._save(work, state)
        if status != 0:
            raise UserError(f"{failure} (exit {status}); run the same command again to resume")

    def _stage(
        self,
        work: Path,
        state: dict[str, Any],
        number: int,
        stage: str,
        checkpoints: dict[str, Path],
        block_size: int,
    ) -> None:
        options = self.options
        out = work / stage
        steps = options.steps[stage]
        heading = f"stage {number}/{len(options.stages)}: {stage}, {steps} steps"
        if stage_finished(out, steps):
            self.say(f"{heading}: finished before, skipped")
            return
        resumed = (out / "last" / "trainer.pt").is_file()
        self.say(f"{heading}{': resuming from its last checkpoint' if resumed else ''} -> {out}")
        common = [
            "--data", str(options.data),
            "--out", str(out),
            "--steps", str(steps),
            "--batch-size", str(options.batch_size),
            "--val-every", str(options.val_every or min(steps, 250)),
            "--val-limit", str(options.val_limit),
            "--select-by", options.select_by,
            "--cache-dir", str(work / ".cache"),
        ]  # fmt: skip
        if stage == "ar":
            command = echo_train("ar", "--init", str(checkpoints["ar"]), *common)
        elif stage == "rad":
            start = work / "ar" / "best" if "ar" in options.stages else checkpoints["teacher"]
            command = echo_train("rad", "--init", str(start), "--block-size", str(block_size), *common)
        else:
            teacher = work / "rad" / "best" if "rad" in options.stages else checkpoints["teacher"]
            # Same teacher: fine-tune the version's own student; a new teacher: distil afresh from it.
            own = None if "rad" in options.stages else checkpoints.get("student")
            student = deeper_student(checkpoints) if own is None else ["--student", str(own)]
            command = echo_train(
                "dcd", "--teacher", str(teacher), *student, *common,
                "--rounds", str(options.dcd_rounds),
                "--collect-per-round", str(options.collect_per_round),
            )  # fmt: skip
        self._timed(work, state, stage, command, f"echo-train {stage} failed")

    def _export(
        self, work: Path, state: dict[str, Any], export: Path, student: Path, teacher: Path | None, name: str
    ) -> None:
        """The student's ONNX export, with the teacher inside it as the draft gate's re-decode model."""
        if (export / "manifest.json").is_file() and provenance_problem(export, student) is None:
            self.say(f"export: {export} holds the export of {student} already, skipped")
            return
        self.say(f"export: {student} -> {export} (ONNX, checked against the checkpoint)")
        redecode = [] if teacher is None else ["--redecode-checkpoint", str(teacher)]
        command = echo_train(
            "export", "--checkpoint", str(student), *redecode, "--out", str(export), "--name", name, "--force"
        )
        self._timed(work, state, "export", command, "echo-train export failed")


def deeper_student(checkpoints: dict[str, Path]) -> list[str]:
    """`--student-layers N` when the version's student has more decoder layers than its teacher (made
    with that option): a student distilled afresh from a new teacher keeps the served depth."""
    served, taught = (
        decoder_layers(checkpoints[k]) if k in checkpoints else None for k in ("student", "teacher")
    )
    return ["--student-layers", str(served)] if served and taught and served > taught else []


def decoder_layers(checkpoint: Path) -> int | None:
    """A checkpoint's decoder depth from its config.json ("text_config" first, then the top level)."""
    try:
        data = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
        layers = (data.get("text_config") or {}).get("num_hidden_layers", data.get("num_hidden_layers"))
        return None if layers is None else int(layers)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def parent_starts(stages: tuple[str, ...]) -> list[tuple[str, str]]:
    """(stage, checkpoint) for the stages that start from the parent version's checkpoints: ar from
    its AR model; rad from its teacher unless ar ran first; dcd from its teacher unless rad ran first."""
    starts = []
    for stage in stages:
        if stage == "ar":
            starts.append(("ar", "ar"))
        elif stage == "rad" and "ar" not in stages:
            starts.append(("rad", "teacher"))
        elif stage == "dcd" and "rad" not in stages:
            starts.append(("dcd", "teacher"))
    return starts


def stage_finished(out: Path, steps: int) -> bool:
    """A stage ran to `steps` when its metrics.json (written at its end) says so and best/ is there."""
    try:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return int(metrics.get("steps", 0)) >= steps and (out / "best" / "config.json").is_file()


def _find(session: Session, reference: str) -> ModelVersion:
    try:
        return find_version(session, reference)
    except UnknownVersion as error:
        raise UserError(str(error)) from None


def retrain(
    sessions: sessionmaker[Session],
    settings: Settings,
    options: RetrainOptions,
    *,
    runner: Runner | None = None,
    say: Say = print,
    progress: ProgressFactory = no_progress,
    gate: Callable[..., dict[str, Any]] | None = None,
) -> RetrainResult:
    """Run `options` (see the module's docstring); a UserError says what to fix or to run again."""
    return Retraining(sessions, settings, options, runner=runner, say=say, progress=progress, gate=gate).run()
