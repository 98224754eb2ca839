"""Tables that fit the operator's terminal: one line per row, never a cell folded letter by letter.

An 80-column terminal cannot hold ten columns of timestamps and hashes: rich then folds every cell
into a tower of fragments. Instead, as `docker ps` or `systemctl` do, a row stays on one line: the
one flexible column (a note, a path) gets the width the others leave and is cut with an ellipsis,
and when even that is too little the columns of least priority are left out, the caption naming
them. Output to a pipe or a file is not a terminal: it gets every column at full width, for grep
and for the record (`output_console`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

ELLIPSIS = "…"
FLEX_MIN = 16  # a note or a path narrower than this says too little: drop a column instead
WIDE = 10_000  # "no limit" for output that is not a terminal


@dataclass(frozen=True)
class Column:
    header: str
    justify: Literal["left", "right"] = "left"
    keep: int = 0  # higher is kept longer when the terminal is narrow
    flexible: bool = False  # takes the width left over, cut to fit
    cut: Literal["end", "start"] = "end"  # where a flexible cell loses text ("start" keeps a path's end)
    cut_hint: str | None = None  # said under the table when a flexible cell was cut: where to read it whole


def output_console() -> Console:
    """The console for a command's tables: the terminal's width, or unlimited for a pipe or a file."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDE)


def fitted_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> Table:
    """A table of plain-text `rows` (markup is escaped here) no wider than `width` where it can be.

    At most one column may be flexible. Columns are dropped, lowest `keep` first (the later one of
    equals first), until the others leave the flexible column FLEX_MIN cells, or until only the
    columns of the highest `keep` remain."""
    if sum(column.flexible for column in columns) > 1:
        raise ValueError("at most one flexible column")
    shown = list(range(len(columns)))
    flexible = next((i for i, column in enumerate(columns) if column.flexible), None)
    droppable = sorted(
        (i for i in shown if i != flexible and columns[i].keep < max(c.keep for c in columns)),
        key=lambda i: (columns[i].keep, -i),
    )
    blank = [_with_cell(row, flexible, "") for row in rows] if flexible is not None else rows
    header = cell_len(columns[flexible].header) if flexible is not None else 0
    while True:
        # the width of everything but the flexible column's text: what is left is its room
        room = width - _width(_table(columns, blank, shown)) + header
        fits = room >= FLEX_MIN if flexible is not None else room >= 0
        if fits or not droppable:
            break
        shown.remove(droppable.pop(0))
    notes = []
    if flexible is not None:
        column = columns[flexible]
        longest = max((cell_len(row[flexible]) for row in rows), default=0)
        room = max(room, cell_len(column.header), min(FLEX_MIN, longest))
        if longest > room:
            rows = [_with_cut(row, flexible, room, column.cut) for row in rows]
            notes += [column.cut_hint] if column.cut_hint else []
    hidden = [columns[i].header.replace("\n", " ") for i in range(len(columns)) if i not in shown]
    if hidden:
        notes.append(
            f"not shown at {width} columns: {', '.join(hidden)} (a wider terminal or a pipe shows all)"
        )
    table = _table(columns, rows, shown)
    table.caption = escape("\n".join(notes)) if notes else None
    return table


def _table(columns: Sequence[Column], rows: Sequence[Sequence[str]], shown: Sequence[int]) -> Table:
    table = Table(caption_justify="left", caption_style="dim")  # rich's default box, as `echo-admin study`
    for i in shown:
        column = columns[i]
        table.add_column(escape(column.header), justify=column.justify, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(escape(row[i]) for i in shown))
    return table


def _width(table: Table) -> int:
    console = Console(width=WIDE)
    return Measurement.get(console, console.options, table).maximum


def _with_cell(row: Sequence[str], index: int, text: str) -> list[str]:
    cells = list(row)
    cells[index] = text
    return cells


def _with_cut(row: Sequence[str], index: int, width: int, cut: Literal["end", "start"]) -> list[str]:
    text = row[index]
    if cell_len(text) <= width:
        return list(row)
    if cut == "end":
        return _with_cell(row, index, set_cell_size(text, width - 1) + ELLIPSIS)
    return _with_cell(row, index, ELLIPSIS + set_cell_size(text[::-1], width - 1)[::-1])


def print_fitted(
    console: Console,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
) -> None:
    """The title on its own line (a table title would wrap to the table's width), then the table."""
    console.print(escape(title), style="bold", highlight=False)
    console.print(fitted_table(columns, rows, console.width))
