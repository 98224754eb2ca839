"""`echo-admin quality`: it scores what waits, then prints the figures; on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node.config.settings import load_settings
from node.learning.signed import SignedReportIn, store_signed
from node.ops.admin import main
from node.store.database import Database, migrate, open_database
from node.store.models import ModelVersion, Report, Study
from node.store.states import SignedSource, StudyState

MONDAY = datetime(2026, 11, 30, 9, tzinfo=UTC)  # ISO 2026-W49
NEXT_MONDAY = datetime(2026, 12, 7, 9, tzinfo=UTC)  # 2026-W50
NORMAL = ("Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.", "No acute disease.")
EFFUSION = (
    "Heart size is normal. Small left pleural effusion. No pneumothorax.",
    "Small left pleural effusion.",
)
EDEMA = ("Cardiomegaly. Pulmonary edema.", "Cardiomegaly and edema.")


def run_admin(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, **env: str
) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")  # rich: one table row per line
    monkeypatch.setattr("sys.argv", ["echo-admin", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def populate(database: Database, name: str) -> None:
    """Two model versions; four studies drafted and signed (not yet scored), one signed but not drafted.

    v1 (week 49): EFFUSION signed NORMAL (1 FP on a normal study), NORMAL signed NORMAL (identical),
    EDEMA signed EDEMA (2 TP, identical) -> tp 2, fp 1, fn 0; v2 (week 50): NORMAL signed EFFUSION (1 FN).
    """
    tag = uuid.uuid4().hex[:6]
    plan = [("v1", MONDAY, EFFUSION, NORMAL), ("v1", MONDAY, NORMAL, NORMAL), ("v1", MONDAY, EDEMA, EDEMA)]
    plan.append(("v2", NEXT_MONDAY, NORMAL, EFFUSION))
    with database.sessions.begin() as session:
        models = {
            v: ModelVersion(name=name, version=f"{v}-{tag}", path="/m", sha256="0" * 64, block_size=8)
            for v in ("v1", "v2")
        }
        session.add_all(models.values())
        session.flush()
        for n, (version, at, draft, signed) in enumerate([*plan, ("v1", MONDAY, None, NORMAL)]):
            accession = f"{tag}{n}"
            study = Study(
                study_instance_uid=f"1.2.{uuid.uuid4().int % 10**12}",
                accession_number=accession,
                state=StudyState.DELIVERED,
                first_received_at=at,
                last_received_at=at,
            )
            session.add(study)
            session.flush()
            if draft is not None:
                session.add(
                    Report(
                        study_id=study.id,
                        model_version_id=models[version].id,
                        findings=draft[0],
                        impression=draft[1],
                        text=" ".join(draft),
                        tokens=40,
                        forwards=5,
                        seconds=0.1,
                        created_at=at,
                    )
                )
            incoming = SignedReportIn(
                source=SignedSource.HL7,
                message_key=f"RIS|{tag}|{n}",
                message_type="ORU^R01",
                findings=signed[0],
                impression=signed[1],
                text=" ".join(signed),
                accession_number=accession,
            )
            store_signed(session, incoming)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    database = open_database(load_settings(data_dir=data_dir))
    migrate(database.engine)
    database.dispose()
    return data_dir


def populated(data_dir: Path) -> None:
    database = open_database(load_settings(data_dir=data_dir))
    populate(database, "student")
    database.dispose()


def test_with_nothing_scored_it_says_so(data_dir, capsys, monkeypatch):
    code, out, err = run_admin(["quality"], capsys, monkeypatch, ECHO_DATA_DIR=str(data_dir))
    assert (code, err) == (0, "")
    assert out.startswith(
        "no scored drafts yet: a draft is scored when the signed report of its study comes back"
    )


def test_it_scores_waiting_drafts_then_prints_a_row_per_model_version(data_dir, capsys, monkeypatch):
    populated(data_dir)
    code, out, err = run_admin(["quality"], capsys, monkeypatch, ECHO_DATA_DIR=str(data_dir))
    assert (code, err) == (0, "")
    assert "scored 4 new drafts against signed reports" in out
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") == 12]
    by_version = {row[2][:2]: row for row in cells if row[2][:2] in ("v1", "v2")}
    # id, model, version | studies, F1, precision, recall, normal, FP / normal, edit distance, changed
    assert by_version["v1"][3:] == ["3", "0.800", "0.667", "1.000", "2", "0.50", by_version["v1"][9], "33%"]
    assert by_version["v2"][3:8] == ["1", "0.000", "0.000", "0.000", "0"] and by_version["v2"][8] == "-"
    assert "edit distance: the share of words the radiologist changed" in out
    code, again, _ = run_admin(["quality"], capsys, monkeypatch, ECHO_DATA_DIR=str(data_dir))
    assert code == 0 and "scored" not in again.split("Drafts against")[0]  # nothing new to score


def test_json_filters_and_weeks(data_dir, capsys, monkeypatch):
    populated(data_dir)
    env = {"ECHO_DATA_DIR": str(data_dir)}
    code, out, err = run_admin(["quality", "--json", "--by-week"], capsys, monkeypatch, **env)
    assert code == 0 and "scored 4 new drafts" in err  # stdout is only the JSON
    rows = json.loads(out)
    assert [(r["model"]["version"][:2], r["week"], r["studies"]) for r in rows] == [
        ("v1", "2026-W49", 3),
        ("v2", "2026-W50", 1),
    ]
    v1 = rows[0]
    assert (v1["precision"], v1["recall"], v1["false_positives_per_normal"]) == (
        pytest.approx(2 / 3),
        1.0,
        0.5,
    )
    assert 0 < v1["mean_edit_distance"] < 1 and v1["impression_changed_share"] == pytest.approx(1 / 3)
    code, out, _ = run_admin(["quality", "--json", "--since", "2026-12-01"], capsys, monkeypatch, **env)
    assert [r["model"]["version"][:2] for r in json.loads(out)] == ["v2"]
    version = rows[0]["model"]["version"]
    code, out, _ = run_admin(["quality", "--json", "--model", version], capsys, monkeypatch, **env)
    assert [r["model"]["version"] for r in json.loads(out)] == [version]
    code, out, _ = run_admin(
        ["quality", "--model", version, "--since", "2027-01-01"], capsys, monkeypatch, **env
    )
    assert code == 0 and out.strip() == f"no scored drafts for --model {version} --since 2027-01-01"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "--since 'last week' is not a date YYYY-MM-DD"),
        (["--model", "v9"], "no model version is called 'v9' (see `echo-admin models`)"),
    ],
)
def test_bad_options_are_one_line_errors(data_dir, capsys, monkeypatch, args, message):
    populated(data_dir)
    code, out, err = run_admin(["quality", *args], capsys, monkeypatch, ECHO_DATA_DIR=str(data_dir))
    assert (code, out) == (2, "")
    assert err == f"echo-admin: error: {message}\n"


def test_a_missing_database_is_one_line(tmp_path, capsys, monkeypatch):
    code, _, err = run_admin(["quality"], capsys, monkeypatch, ECHO_DATA_DIR=str(tmp_path / "none"))
    assert code == 2 and err.startswith("echo-admin: error: no database at") and err.count("\n") == 1


@pytest.mark.integration
def test_on_postgresql(postgres_url, capsys, monkeypatch):
    database = open_database(load_settings(database_url=postgres_url))
    migrate(database.engine)
    name = f"student-{uuid.uuid4().hex[:8]}"  # the session's database is shared: filter on our own model
    populate(database, name)
    database.dispose()
    code, out, err = run_admin(
        ["quality", "--json", "--model", name], capsys, monkeypatch, ECHO_DATABASE_URL=postgres_url
    )
    assert code == 0, err
    figures = [
        (r["model"]["version"][:2], r["studies"], round(r["f1"], 3), r["normal_studies"])
        for r in json.loads(out)
    ]
    assert figures == [("v1", 3, 0.8, 2), ("v2", 1, 0.0, 0)]
