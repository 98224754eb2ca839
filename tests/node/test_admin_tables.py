"""echo-admin's tables on an 80-column terminal: one line per row, no line longer than the terminal."""

from __future__ import annotations

from datetime import datetime

import pytest
from rich.console import Console

from node.learning.quality import ModelRef, QualityRow
from node.ops.models_cli import MODEL_COLUMNS, model_cells
from node.ops.overview import StudyRow
from node.ops.overview_view import print_state_counts, print_studies
from node.ops.quality_cli import quality_cells, quality_columns
from node.ops.tables import Column, fitted_table, print_fitted
from node.store.states import StudyState

AT = datetime(2026, 12, 2, 16, 12, 14)
LONG_NOTE = "draft gate held: adjacent duplicated words after re-decoding (mean confidence 0.41)"


def rendered(width: int, draw) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    draw(console)
    return console.export_text().splitlines()


def assert_fits(lines: list[str], width: int) -> None:
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, f"{len(too_long)} lines over {width} columns:\n" + "\n".join(too_long)


def studies() -> list[StudyRow]:
    return [
        StudyRow(1, "1.2.3.1", "ACC-CHEST", "DX", StudyState.QUEUED, None, 2, AT, AT, AT),
        StudyRow(
            2,
            "1.2.3.2",
            "1234567890123456",
            "CR",
            StudyState.SKIPPED,
            "body part KNEE is not CHEST",
            1,
            AT,
            AT,
            AT,
        ),
        StudyRow(3, "1.2.3.3", None, None, StudyState.FAILED, None, 3, AT, AT, AT, LONG_NOTE),
    ]


def cells(line: str, rule: str = "│") -> list[str]:
    return [cell.strip() for cell in line.split(rule)[1:-1]]


def row_line(lines: list[str], first_cell: str) -> str:
    [line] = [line for line in lines if cells(line)[:1] == [first_cell]]
    return line


def test_studies_fit_80_columns_one_line_per_study_with_the_note_cut_and_the_hidden_columns_named() -> None:
    lines = rendered(80, lambda console: print_studies(console, studies()))
    assert_fits(lines, 80)
    assert lines[0] == "Studies (3 shown)"
    failed = row_line(lines, "3")
    assert "failed" in failed and "2026-12-02 16:12:14" in failed  # state and time whole, on the row's line
    assert "draft gate held" in failed and cells(failed)[-1].endswith("…") and LONG_NOTE not in failed
    assert "1234567890123456" in row_line(lines, "2")  # the accession is never cut
    text = "\n".join(lines)
    assert "echo-admin study ID shows the whole note" in text
    assert "not shown at 80 columns: study, modality, files, first received, last received" in text


def test_a_wide_console_shows_every_column_and_the_whole_note() -> None:
    lines = rendered(400, lambda console: print_studies(console, studies()))
    assert LONG_NOTE in row_line(lines, "3")
    assert "not shown" not in "\n".join(lines) and "shows the whole note" not in "\n".join(lines)
    assert cells(lines[2], "┃") == [
        "id",
        "study",
        "accession",
        "modality",
        "state",
        "files",
        "first received",
        "last received",
        "updated",
        "note",
    ]


def test_status_counts_fit_80_columns() -> None:
    lines = rendered(80, lambda console: print_state_counts(console, {state: 12345 for state in StudyState}))
    assert_fits(lines, 80)
    assert cells(row_line(lines, "delivered")) == ["delivered", "12345"]


def test_models_fit_80_columns_and_a_long_path_keeps_its_end() -> None:
    from node.store.model_versions import ModelVersionRow

    path = "/var/lib/echo/models/candidates/2026-12-02T16-12-14-riverside-rad-dcd/student-onnx"
    rows = [
        ModelVersionRow(1, "student", "dd4c15374b6b9a88", "/opt/echo/bundled", 8, AT, False, 1234, "retired"),
        ModelVersionRow(
            2, "student", "0123456789abcdef", path, 8, AT, True, 56, "serving", 1, promoted_at=AT
        ),
    ]
    lines = rendered(
        80,
        lambda console: print_fitted(
            console, "Model versions", MODEL_COLUMNS, [model_cells(r) for r in rows]
        ),
    )
    assert_fits(lines, 80)
    serving = row_line(lines, "2")
    assert "0123456789abcdef" in serving and "serving" in serving and "yes" in serving
    assert (
        "…" in serving and cells(serving)[-1].startswith("…") and cells(serving)[-1].endswith("/student-onnx")
    )


@pytest.mark.parametrize("by_week", [False, True])
def test_quality_fits_80_columns_keeping_f1_and_false_positives(by_week: bool) -> None:
    rows = [
        QualityRow(
            ModelRef(7, "student", "dd4c15374b6b9a88"),
            "2026-W49",
            1234,
            0.5114,
            0.52,
            0.5,
            26,
            1.77,
            0.31,
            0.42,
        )
    ]
    columns = quality_columns(by_week)
    lines = rendered(
        80,
        lambda console: print_fitted(console, "Drafts", columns, [quality_cells(r, by_week) for r in rows]),
    )
    assert_fits(lines, 80)
    line = row_line(lines, "7")
    assert "dd4c15374b6b" in line and "0.511" in line and "1.77" in line and "1234" in line
    assert ("2026-W49" in line) is by_week


def test_columns_are_dropped_lowest_keep_first_and_the_later_of_equals_first() -> None:
    columns = [Column("a", keep=3), Column("b", keep=1), Column("c", keep=1), Column("d", keep=2)]
    row = ("a" * 20, "b" * 20, "c" * 20, "d" * 20)
    lines = rendered(50, lambda console: console.print(fitted_table(columns, [row], 50)))
    assert_fits(lines, 50)
    assert cells(lines[3]) == ["a" * 20, "d" * 20]
    assert "not shown at 50 columns: b, c" in "\n".join(lines)
    lines = rendered(70, lambda console: console.print(fitted_table(columns, [row], 70)))
    assert cells(lines[3]) == ["a" * 20, "b" * 20, "d" * 20]


def test_only_one_column_may_be_flexible() -> None:
    with pytest.raises(ValueError, match="at most one flexible column"):
        fitted_table([Column("a", flexible=True), Column("b", flexible=True)], [], 80)


def test_cell_text_is_never_read_as_markup() -> None:
    lines = rendered(
        80, lambda console: console.print(fitted_table([Column("x")], [("[bold]x[/bold]",)], 80))
    )
    assert "[bold]x[/bold]" in "\n".join(lines)
