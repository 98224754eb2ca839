"""The gate's parity check measures a disagreeing graph once more, with other inputs, before it
rejects a candidate (as the exporter does): a one-off error passes, a wrong graph fails twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.learning import parity

GOOD = {"vision": 3e-6, "decoder": 2e-6}
GLITCH = {"vision": 1.6e-3, "decoder": 2e-6}


class Measurements:
    """Answers `_measure` from `answers` in order; `seeds`: the seeds measured."""

    def __init__(self) -> None:
        self.answers: list[dict[str, float]] = []
        self.seeds: list[int] = []

    def __call__(self, model_dir: Path, checkpoint: Path, seed: int) -> tuple[dict[str, float], float]:
        self.seeds.append(seed)
        return self.answers.pop(0), 1e-4


@pytest.fixture
def measured(monkeypatch) -> Measurements:
    measurements = Measurements()
    monkeypatch.setattr(parity, "provenance_problem", lambda *_: None)
    monkeypatch.setattr(parity, "_measure", measurements)
    return measurements


def check(measured: Measurements, tmp_path: Path, *answers: dict[str, float]) -> dict:
    measured.answers = list(answers)
    return parity.check_parity(tmp_path, tmp_path)


def test_graphs_that_agree_are_measured_once(measured, tmp_path) -> None:
    result = check(measured, tmp_path, GOOD)
    assert result["passed"] and measured.seeds == [parity.PARITY_SEED] and "first_errors" not in result
    assert result["detail"] == "largest relative error 3.0e-06 (vision) within 1e-04"


def test_a_one_off_disagreement_is_measured_again_and_passes(measured, tmp_path) -> None:
    result = check(measured, tmp_path, GLITCH, GOOD)
    assert result["passed"] and measured.seeds == list(parity.PARITY_SEEDS) and len(set(measured.seeds)) == 2
    assert result["errors"] == GOOD and result["first_errors"] == GLITCH
    assert result["detail"].endswith("(measured twice: the first time 1.6e-03)")


def test_a_graph_that_disagrees_twice_fails(measured, tmp_path) -> None:
    result = check(measured, tmp_path, GLITCH, GLITCH)
    assert not result["passed"] and len(measured.seeds) == 2
    assert result["detail"].startswith(
        "the vision graph disagrees with the checkpoint: relative error 1.6e-03"
    )


def test_a_child_that_cannot_measure_is_named(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(parity, "provenance_problem", lambda *_: None)
    monkeypatch.setattr(parity, "_measure", lambda *_: "the parity check failed: boom")
    result = parity.check_parity(tmp_path, tmp_path)
    assert not result["passed"] and result["detail"] == "the parity check failed: boom"
