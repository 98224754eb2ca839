"""`echo-admin status` and `echo-admin studies` tables, fitted to the terminal (`node.ops.tables`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console

from node.ops.overview import StudyRow
from node.ops.study_detail_view import when
from node.ops.tables import Column, print_fitted
from node.store.states import StudyState
from node.store.uids import short_uid

STATE_COLUMNS = (Column("state", keep=1), Column("studies", justify="right", keep=1))

# What an operator scans for first is kept longest: which study, its state, why, and when it moved.
STUDY_COLUMNS = (
    Column("id", keep=9),
    Column("study", keep=2),
    Column("accession", keep=8),
    Column("modality", keep=4),
    Column("state", keep=9),
    Column("files", keep=5),
    Column("first received", keep=1),
    Column("last received", keep=3),
    Column("updated", keep=7),
    Column("note", flexible=True, cut_hint="echo-admin study ID shows the whole note"),
)


def print_state_counts(console: Console, counts: Mapping[StudyState, int]) -> None:
    print_fitted(
        console, "Studies", STATE_COLUMNS, [(str(state), str(count)) for state, count in counts.items()]
    )


def print_studies(console: Console, rows: Sequence[StudyRow]) -> None:
    print_fitted(
        console,
        f"Studies ({len(rows)} shown)",
        STUDY_COLUMNS,
        [
            (
                str(row.id),
                short_uid(row.study_instance_uid),
                row.accession_number or "-",
                row.modality or "-",
                str(row.state),
                str(row.instances),
                when(row.first_received_at),
                when(row.last_received_at),
                when(row.updated_at),
                row.note,
            )
            for row in rows
        ],
    )
