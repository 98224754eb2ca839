"""The promotion gate: a candidate replaces the serving model only if it is not worse on the same
held-out site studies.

Both models draft every study of the held-out split (the exported data set's `test` split: patients
never seen in training) with the runtime engine on ONNX, exactly as a worker would; the labeler reads
the drafts and they are scored against the signed reports' labels. The candidate passes when

- positive-finding F1 (micro) >= the serving model's - margin_f1,
- false-positive findings per normal study <= the serving model's + margin_fp,
- tokens per forward (sum over studies) >= 0.9 B (still a one-step-per-block student),
- the parity check passes: its ONNX graphs agree with its own torch checkpoint (`node.learning.parity`).

The margins are the noise of the held-out set, measured: NOISE_Z (1.645) standard errors of the
difference between the two models, from a paired bootstrap over the studies (the same resampled
studies for both, BOOTSTRAP_SAMPLES draws, a fixed seed so the same inputs always give the same
decision). A candidate exactly as good as the serving model then passes 95 times in 100 (one-sided);
two models that draft alike differ little on every resample and get a small margin, a small or
mixed set a large one. It is kept within [floor, cap]: the floor so that a difference no site could
notice does not refuse a model, the cap so that a set too small to tell anything cannot let a
clearly worse model through (the figures say when the cap bound: the check is then stricter than
the noise, and a good candidate may be refused; export more studies). An operator may fix the
margin instead (`--margin`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from echo.errors import UserError
from echo.findings import FINDINGS, Label
from node.config.settings import Settings
from node.learning.parity import check_parity
from node.learning.registry import checkpoints_of, current_version
from node.store.models import ModelVersion, utcnow
from node.store.states import ModelRole

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 17
NOISE_Z = 1.645  # one-sided 95 %
F1_MARGIN_FLOOR, F1_MARGIN_CAP = 0.01, 0.05
FP_MARGIN_FLOOR, FP_MARGIN_CAP = 0.02, 0.10
TOKENS_PER_FORWARD_SHARE = 0.9  # of the block size B
FEW_STUDIES = 30  # fewer held-out studies than this: the figures warn that the decision is weak

# (description, total) -> advance(n): the CLI passes a rich progress bar
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass(frozen=True)
class StudyDraft:
    """One held-out study as a model drafted it: what the labeler read in the draft, and the truth."""

    id: str
    predicted: dict[str, str]  # finding -> label read in the draft
    reference: dict[str, str]  # finding -> label of the signed report
    tokens: int
    forwards: int


@dataclass(frozen=True)
class Evaluation:
    """A model's drafts of the held-out studies."""

    model_dir: str
    version: str
    block_size: int
    drafts: tuple[StudyDraft, ...]

    def counts(self) -> np.ndarray:
        """(studies, 4): true positives, false positives, false negatives, positives said in a
        normal study (-1 where the study is not normal)."""
        rows = []
        for draft in self.drafts:
            tp = fp = fn = 0
            for finding in FINDINGS:
                said = draft.predicted.get(finding) == Label.POSITIVE
                true = draft.reference.get(finding) == Label.POSITIVE
                tp, fp, fn = tp + (said and true), fp + (said and not true), fn + (true and not said)
            normal = not any(draft.reference.get(f) == Label.POSITIVE for f in FINDINGS)
            rows.append((tp, fp, fn, fp if normal else -1))
        return np.asarray(rows, dtype=np.int64).reshape(-1, 4)

    def figures(self) -> dict[str, Any]:
        counts = self.counts()
        tp, fp, fn = (int(counts[:, i].sum()) for i in range(3))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        tokens = sum(d.tokens for d in self.drafts)
        forwards = sum(d.forwards for d in self.drafts)
        normal = counts[:, 3] >= 0
        return {
            "version": self.version,
            "model_dir": self.model_dir,
            "studies": len(self.drafts),
            "f1": float(_micro_f1(counts[None, :, :3].sum(axis=1))[0]),
            "precision": precision,
            "recall": recall,
            "normal_studies": int(normal.sum()),
            "fp_per_normal": float(_fp_per_normal(counts[None, :, 3])[0]),
            "tokens_per_forward": tokens / forwards if forwards else 0.0,
            "block_size": self.block_size,
        }


def _micro_f1(summed: np.ndarray) -> np.ndarray:
    """Micro F1 of (resamples, 3) summed tp, fp, fn: 2tp / (2tp + fp + fn), 0 where tp is 0."""
    tp, fp, fn = summed[:, 0], summed[:, 1], summed[:, 2]
    denominator = 2 * tp + fp + fn
    return np.where(tp > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def _fp_per_normal(said: np.ndarray) -> np.ndarray:
    """(resamples, studies) positives said per study (-1: not normal) -> per normal study (0 if none)."""
    normal = said >= 0
    studies = normal.sum(axis=1)
    return np.where(studies > 0, np.where(normal, said, 0).sum(axis=1) / np.maximum(studies, 1), 0.0)


def paired_standard_errors(candidate: Evaluation, serving: Evaluation) -> dict[str, float]:
    """Bootstrap standard errors of candidate - serving for F1 and FP per normal study, resampling
    the studies together (the same draw for both models)."""
    if [d.id for d in candidate.drafts] != [d.id for d in serving.drafts]:
        raise ValueError("the two evaluations are not of the same studies")
    ours, theirs = candidate.counts(), serving.counts()
    n = len(ours)
    if n < 2:
        return {"f1": 0.0, "fp_per_normal": 0.0}
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    f1 = _micro_f1(ours[draws, :3].sum(axis=1)) - _micro_f1(theirs[draws, :3].sum(axis=1))
    fp = _fp_per_normal(ours[draws, 3]) - _fp_per_normal(theirs[draws, 3])
    return {"f1": float(f1.std(ddof=1)), "fp_per_normal": float(fp.std(ddof=1))}


@dataclass(frozen=True)
class Margins:
    f1: float
    fp_per_normal: float
    how: str


def margins(standard_errors: dict[str, float], fixed: float | None = None) -> Margins:
    if fixed is not None:
        return Margins(fixed, fixed, f"fixed by the operator: {fixed:g}")
    noise = {name: NOISE_Z * error for name, error in standard_errors.items()}
    f1 = min(max(noise["f1"], F1_MARGIN_FLOOR), F1_MARGIN_CAP)
    fp = min(max(noise["fp_per_normal"], FP_MARGIN_FLOOR), FP_MARGIN_CAP)
    capped = [
        name
        for name, value, cap in (
            ("F1", noise["f1"], F1_MARGIN_CAP),
            ("FP/normal", noise["fp_per_normal"], FP_MARGIN_CAP),
        )
        if value > cap
    ]
    how = (
        f"{NOISE_Z} x the paired bootstrap standard error of the difference ({BOOTSTRAP_SAMPLES} "
        f"resamples), F1 within [{F1_MARGIN_FLOOR}, {F1_MARGIN_CAP}], FP/normal within "
        f"[{FP_MARGIN_FLOOR}, {FP_MARGIN_CAP}]"
    )
    if capped:
        how += f"; capped for {', '.join(capped)}: the held-out set is too small to measure it well"
    return Margins(f1, fp, how)


def decide(
    candidate: Evaluation,
    serving: Evaluation,
    parity: dict[str, Any],
    *,
    fixed_margin: float | None = None,
    held_out: dict[str, Any] | None = None,
    serving_id: int | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The gate's figures and decision, as stored in model_versions.gate."""
    ours, theirs = candidate.figures(), serving.figures()
    errors = paired_standard_errors(candidate, serving)
    chosen = margins(errors, fixed_margin)
    floor_tpf = TOKENS_PER_FORWARD_SHARE * candidate.block_size
    checks = {
        "f1": {
            "passed": ours["f1"] >= theirs["f1"] - chosen.f1 - 1e-12,
            "rule": f"candidate F1 >= serving F1 - {chosen.f1:.3f}",
            "candidate": ours["f1"],
            "serving": theirs["f1"],
        },
        "fp_per_normal": {
            "passed": ours["fp_per_normal"] <= theirs["fp_per_normal"] + chosen.fp_per_normal + 1e-12,
            "rule": f"candidate FP/normal <= serving FP/normal + {chosen.fp_per_normal:.3f}",
            "candidate": ours["fp_per_normal"],
            "serving": theirs["fp_per_normal"],
        },
        "tokens_per_forward": {
            "passed": ours["tokens_per_forward"] >= floor_tpf,
            "rule": f"candidate tokens per forward >= {TOKENS_PER_FORWARD_SHARE} B = {floor_tpf:.2f}",
            "candidate": ours["tokens_per_forward"],
            "serving": theirs["tokens_per_forward"],
        },
        "parity": {"rule": "ONNX graphs agree with the candidate's checkpoint", **parity},
    }
    failures = {
        "f1": f"F1 {ours['f1']:.3f} is below the serving {theirs['f1']:.3f} - {chosen.f1:.3f}",
        "fp_per_normal": (
            f"FP/normal {ours['fp_per_normal']:.3f} is above the serving {theirs['fp_per_normal']:.3f} "
            f"+ {chosen.fp_per_normal:.3f}"
        ),
        "tokens_per_forward": (
            f"{ours['tokens_per_forward']:.2f} tokens per forward is below {floor_tpf:.2f} "
            f"({TOKENS_PER_FORWARD_SHARE} B)"
        ),
        "parity": f"parity: {parity.get('detail') or 'failed'}",
    }
    reasons = [failures[name] for name, check in checks.items() if not check["passed"]]
    notes = []
    if ours["studies"] < FEW_STUDIES:
        notes.append(f"only {ours['studies']} held-out studies: the decision is weak (export more)")
    return {
        "passed": not reasons,
        "decision": "promote" if not reasons else "reject",
        "reasons": reasons,
        "notes": notes,
        "checks": checks,
        "candidate": ours,
        "serving": {**theirs, "model_version_id": serving_id},
        "margins": {**asdict(chosen), "standard_errors": errors},
        "held_out": held_out or {},
        "at": at.isoformat() if at is not None else None,
    }


def evaluate_export(
    model_dir: Path,
    manifest: Path,
    split: str | None = "test",
    *,
    limit: int | None = None,
    progress: ProgressFactory = no_progress,
) -> Evaluation:
    """Draft every study of `split` with the exported model, as a worker serves it (its manifest's
    decoding, one study per call), and read the drafts with the labeler."""
    from echo.metrics.labeler import label_report
    from echo.runtime import Engine
    from echo.training.examples import split_rows  # no torch

    engine = Engine.load(model_dir)
    rows = split_rows(manifest, split, limit)
    advance = progress(f"drafting {len(rows)} held-out studies with {engine.manifest.version}", len(rows))
    drafts = []
    for row in rows:  # each study's frontal image read as a worker reads it
        report = engine.generate(row.image_path(manifest.parent))
        predicted = {finding: str(label) for finding, label in label_report(report.text).items()}
        drafts.append(StudyDraft(row.id, predicted, dict(row.labels), report.tokens, report.forwards))
        advance(1)
    return Evaluation(
        str(Path(model_dir).resolve()),
        engine.manifest.version,
        engine.manifest.generation.block_size,
        tuple(drafts),
    )


def check_manifest(manifest: Path, split: str | None) -> int:
    """How many studies the held-out split has; a missing file or an empty split is a UserError."""
    from echo.data.manifest import read_manifest

    if not manifest.is_file():
        raise UserError(
            f"held-out manifest {manifest} does not exist (`echo-admin dataset export` writes one)"
        )
    count = sum(1 for row in read_manifest(manifest) if split is None or row.split == split)
    if count == 0:
        raise UserError(f"manifest {manifest} has no studies in the {split!r} split to hold out")
    return count


def run_gate(
    sessions: sessionmaker[Session],
    settings: Settings,
    candidate_id: int,
    manifest: Path,
    *,
    split: str | None = "test",
    limit: int | None = None,
    fixed_margin: float | None = None,
    progress: ProgressFactory = no_progress,
    evaluate: Callable[..., Evaluation] | None = None,
    parity: Callable[[Path, Path | None], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate candidate `candidate_id` and the model served now on `manifest`'s held-out split,
    check the candidate's parity, and store the figures and decision on the candidate's row (role
    candidate when it passed, rejected when it did not). Returns the gate's figures."""
    check_manifest(manifest, split)
    with sessions.begin() as session:
        candidate = session.get(ModelVersion, candidate_id)
        if candidate is None:
            raise UserError(f"no model version {candidate_id}")
        if candidate.role not in (ModelRole.CANDIDATE, ModelRole.REJECTED):
            raise UserError(
                f"version {candidate.id} is {candidate.role}, not a candidate: the gate is for candidates"
            )
        serving = current_version(session, settings)
        if serving.id == candidate.id:
            raise UserError(f"version {candidate.id} is what the workers serve: nothing to compare it with")
        candidate_dir, serving_dir, serving_id = Path(candidate.path), Path(serving.path), serving.id
        student = checkpoints_of(candidate).get("student")
    evaluate = evaluate or evaluate_export
    ours, theirs = (
        evaluate(path, manifest, split, limit=limit, progress=progress)
        for path in (candidate_dir, serving_dir)
    )
    checked = (parity or check_parity)(candidate_dir, student)
    held_out = {"manifest": str(manifest.resolve()), "split": split or "all", "limit": limit}
    gate = decide(
        ours,
        theirs,
        checked,
        fixed_margin=fixed_margin,
        held_out=held_out,
        serving_id=serving_id,
        at=utcnow(),
    )
    with sessions.begin() as session:
        row = session.get_one(ModelVersion, candidate_id)
        row.gate = gate
        row.role = ModelRole.CANDIDATE if gate["passed"] else ModelRole.REJECTED
    return gate
