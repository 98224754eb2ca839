"""The promotion gate: both models on the same held-out studies; a candidate no worse passes, a worse
one is rejected (and then promoted only with --force)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from echo.data.synthetic import generate_dataset
from echo.errors import UserError
from echo.findings import FINDINGS
from echo.metrics.evaluate import evaluate
from echo.runtime.manifest import sha256_of
from node.config.settings import Settings, bundled_model_dir
from node.learning.gate import (
    F1_MARGIN_CAP,
    F1_MARGIN_FLOOR,
    NOISE_Z,
    Evaluation,
    StudyDraft,
    check_manifest,
    decide,
    paired_standard_errors,
    run_gate,
)
from node.learning.registry import RegistryError, promote, register_candidate
from node.store.database import Database
from node.store.models import ModelVersion
from node.store.states import ModelRole

PARITY_OK: dict = {"passed": True, "detail": "largest relative error 3e-05 (vision) within 1e-04"}


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`echo-train make-synthetic --n 24 --seed 3 --size 256`."""
    return generate_dataset(24, 3, tmp_path_factory.mktemp("synthetic"), size=256)


@pytest.fixture(autouse=True)
def _serving_the_bundled_student(bundled_id: int) -> None:
    """What the workers serve in these tests: the bundled student."""


def copy_export(directory: Path, name: str, blind: bool = False) -> Path:
    """The bundled export under another name; `blind` zeroes the vision graph's weights (a model that
    no longer sees the image: it drafts much the same report for every study)."""
    shutil.copytree(bundled_model_dir(), directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["name"] = name
    if blind:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(directory / "vision.onnx")
        for weights in graph.graph.initializer:
            values = numpy_helper.to_array(weights)
            if values.dtype == np.float32 and values.ndim >= 2:
                weights.CopyFrom(numpy_helper.from_array(np.zeros_like(values), weights.name))
        onnx.save(graph, directory / "vision.onnx")
        manifest["files"]["vision.onnx"] = sha256_of(directory / "vision.onnx")
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def register(database: Database, settings: Settings, export: Path) -> int:
    with database.sessions.begin() as session:
        return register_candidate(session, settings, export).id


def role_and_gate(database: Database, version_id: int) -> tuple[str, dict]:
    with database.sessions() as session:
        row = session.get_one(ModelVersion, version_id)
        return row.role, row.gate


@pytest.mark.slow
def test_the_same_model_as_the_serving_one_passes(
    database: Database, settings: Settings, held_out: Path, tmp_path: Path
) -> None:
    """The bundled ONNX student against itself, drafting the 24 studies for real, parity checked."""
    candidate = register(database, settings, copy_export(tmp_path / "same", "site-same"))
    figures = run_gate(database.sessions, settings, candidate, held_out, split=None)
    assert figures["passed"] and figures["decision"] == "promote" and figures["reasons"] == []
    ours, theirs = figures["candidate"], figures["serving"]
    for name in ("f1", "fp_per_normal", "tokens_per_forward", "precision", "recall"):
        assert ours[name] == theirs[name], name
    assert ours["studies"] == 24 and ours["tokens_per_forward"] >= 0.9 * 8
    assert figures["margins"]["standard_errors"] == {"f1": 0.0, "fp_per_normal": 0.0}
    assert figures["margins"]["f1"] == F1_MARGIN_FLOOR
    assert figures["checks"]["parity"]["passed"], figures["checks"]["parity"]
    assert figures["notes"] == ["only 24 held-out studies: the decision is weak (export more)"]
    role, stored = role_and_gate(database, candidate)
    assert role == ModelRole.CANDIDATE and stored == figures
    with database.sessions.begin() as session:
        promote(session, session.get_one(ModelVersion, candidate))


@pytest.mark.slow
def test_a_worse_export_is_rejected_and_needs_force(
    database: Database, settings: Settings, held_out: Path, tmp_path: Path
) -> None:
    """A candidate whose vision graph was zeroed: worse F1, more false positives, and graphs that no
    longer agree with the checkpoint its manifest names."""
    worse = register(database, settings, copy_export(tmp_path / "worse", "site-worse", blind=True))
    figures = run_gate(database.sessions, settings, worse, held_out, split=None)
    assert not figures["passed"] and figures["decision"] == "reject"
    assert figures["candidate"]["f1"] < figures["serving"]["f1"] - figures["margins"]["f1"]
    assert [reason.split()[0] for reason in figures["reasons"]] == ["F1", "FP/normal", "parity:"]
    assert "the vision graph disagrees with the checkpoint" in figures["reasons"][-1]
    role, stored = role_and_gate(database, worse)
    assert role == ModelRole.REJECTED and stored["reasons"] == figures["reasons"]
    with (
        database.sessions.begin() as session,
        pytest.raises(RegistryError, match="failed the promotion gate"),
    ):
        promote(session, session.get_one(ModelVersion, worse))


def test_the_gate_refuses_what_it_cannot_judge(
    database: Database, settings: Settings, held_out: Path, tmp_path: Path
) -> None:
    with database.sessions() as session:
        serving_id = session.query(ModelVersion.id).scalar()
    with pytest.raises(UserError, match="is registered, not a candidate"):
        run_gate(database.sessions, settings, serving_id, held_out)
    with pytest.raises(UserError, match="does not exist"):
        check_manifest(tmp_path / "none.jsonl", "test")
    with pytest.raises(UserError, match="no studies in the 'holdout' split"):
        check_manifest(held_out, "holdout")


# ---- the decision on injected evaluations ---------------------------------------------------------


def evaluation(
    said: list[set[str]], truth: list[set[str]], tokens: int = 60, forwards: int = 8
) -> Evaluation:
    def labels(positive: set[str]) -> dict[str, str]:
        return {name: "positive" if name in positive else "negative" for name in FINDINGS}

    drafts = tuple(
        StudyDraft(f"s{i}", labels(p), labels(t), tokens, forwards)
        for i, (p, t) in enumerate(zip(said, truth, strict=True))
    )
    return Evaluation("/models/x", "x", 8, drafts)


TRUTH = [{"edema"}, {"nodule"}, set(), set(), {"pneumothorax", "edema"}, set()] * 5
GOOD = evaluation(TRUTH, TRUTH)


def test_equal_figures_pass_and_each_worse_figure_fails_alone() -> None:
    assert decide(GOOD, GOOD, PARITY_OK)["passed"]
    missed = [set() if i % 3 == 0 else t for i, t in enumerate(TRUTH)]
    assert decide(evaluation(missed, TRUTH), GOOD, PARITY_OK)["reasons"][0].startswith("F1 ")
    alarmed = [t or {"nodule"} for t in TRUTH]
    gate = decide(evaluation(alarmed, TRUTH), GOOD, PARITY_OK)
    assert [r.split()[0] for r in gate["reasons"]] == ["F1", "FP/normal"]
    slow = evaluation(TRUTH, TRUTH, tokens=50, forwards=8)  # 6.25 < 0.9 * 8
    assert decide(slow, GOOD, PARITY_OK)["reasons"] == ["6.25 tokens per forward is below 7.20 (0.9 B)"]
    broken = {"passed": False, "detail": "the vision graph disagrees with the checkpoint"}
    assert decide(GOOD, GOOD, broken)["reasons"] == ["parity: the vision graph disagrees with the checkpoint"]


def test_the_margin_is_the_noise_of_the_held_out_set() -> None:
    one_miss = [set() if i == 0 else t for i, t in enumerate(TRUTH)]
    slightly = evaluation(one_miss, TRUTH)
    errors = paired_standard_errors(slightly, GOOD)
    assert errors == paired_standard_errors(slightly, GOOD)  # a fixed seed: the same decision every time
    assert F1_MARGIN_FLOOR < NOISE_Z * errors["f1"] < F1_MARGIN_CAP
    gate = decide(slightly, GOOD, PARITY_OK)
    assert gate["passed"] and gate["margins"]["f1"] == pytest.approx(NOISE_Z * errors["f1"])
    assert not decide(slightly, GOOD, PARITY_OK, fixed_margin=0.0)["passed"]
    few = evaluation([set(), set(), {"edema"}], [{"edema"}, set(), {"edema"}])
    noisy = decide(few, evaluation([{"edema"}, set(), {"edema"}], [{"edema"}, set(), {"edema"}]), PARITY_OK)
    assert noisy["margins"]["f1"] == F1_MARGIN_CAP and "capped for F1" in noisy["margins"]["how"]
    with pytest.raises(ValueError, match="not of the same studies"):
        paired_standard_errors(few, GOOD)


def test_the_figures_are_echo_train_evaluates(held_out: Path) -> None:
    """F1, FP per normal study and tokens per forward as `echo-train evaluate` computes them."""
    rows = [json.loads(line) for line in held_out.read_text().splitlines()]
    rng = np.random.default_rng(5)
    reports = [rows[int(i)]["report"] for i in rng.integers(0, len(rows), len(rows))]
    predictions = [
        {"id": row["id"], "report": text, "tokens": 57 + i % 5, "forwards": 8, "seconds": 0.1}
        for i, (row, text) in enumerate(zip(rows, reports, strict=True))
    ]
    from echo.metrics.labeler import label_report

    ours = Evaluation(
        "/m",
        "v",
        8,
        tuple(
            StudyDraft(
                p["id"],
                {k: str(v) for k, v in label_report(p["report"]).items()},
                r["labels"],
                p["tokens"],
                8,
            )
            for p, r in zip(predictions, rows, strict=True)
        ),
    ).figures()
    theirs = evaluate(predictions, rows, with_semscore=False)
    assert ours["f1"] == pytest.approx(theirs["positive_f1"]["micro"])
    assert ours["fp_per_normal"] == pytest.approx(theirs["normal_studies"]["false_positives_per_study"])
    assert ours["tokens_per_forward"] == pytest.approx(theirs["tokens_per_forward"])
