"""An export's parity check measures a disagreeing graph once more before it refuses the export:
a one-off glitch passes, a graph that disagrees every time (a mistranslation) does not."""

from __future__ import annotations

import pytest

from echo.errors import UserError
from echo.export import exporter

GOOD = {"vision": 3e-6, "prefill": 1e-6, "step": 2e-6}
GLITCH = {**GOOD, "vision": 1.6e-3}


def measured(monkeypatch, *results: dict) -> list[object]:
    queue, seen = list(results), []
    monkeypatch.setattr(exporter, "graph_errors", lambda cases, work: seen.append(cases) or queue.pop(0))
    return seen


def test_a_one_off_disagreement_is_measured_again_against_fresh_references(monkeypatch, tmp_path) -> None:
    seen = measured(monkeypatch, GLITCH, GOOD)
    exporter.check_graphs("first", tmp_path, "float32", lambda: "again")
    assert seen == ["first", "again"]


def test_a_graph_that_disagrees_every_time_fails_the_export(monkeypatch, tmp_path) -> None:
    seen = measured(monkeypatch, GLITCH, GLITCH)
    with pytest.raises(UserError, match=r"vision graph disagrees .*1\.60e-03 > 1e-04"):
        exporter.check_graphs("first", tmp_path, "float32", lambda: "again")
    assert seen == ["first", "again"]


def test_a_graph_that_agrees_is_measured_once(monkeypatch, tmp_path) -> None:
    seen = measured(monkeypatch, GOOD)
    exporter.check_graphs("first", tmp_path, "float32", lambda: "again")
    assert seen == ["first"]
