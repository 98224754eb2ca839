"""The model registry: candidates kept under the data dir, promote / rollback with their history, and
a version the gate did not pass promoted only with --force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from echo.errors import UserError
from node.config.settings import Settings, bundled_model_dir
from node.learning.registry import (
    RegistryError,
    checkpoints_of,
    current_version,
    export_facts,
    promote,
    register_candidate,
    rollback,
)
from node.store.database import Database
from node.store.models import ModelPromotion, ModelVersion
from node.store.states import ModelRole

PASSED = {"passed": True, "decision": "promote", "reasons": []}
FAILED = {"passed": False, "decision": "reject", "reasons": ["F1 0.200 is below the serving 0.400 - 0.030"]}


def variant(directory: Path, name: str) -> Path:
    """A copy of the bundled export under another model name: the same graphs, another registry row."""
    shutil.copytree(bundled_model_dir(), directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["name"] = name
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


@pytest.fixture
def bundled_active(bundled_id: int) -> int:
    return bundled_id


def candidate(database: Database, settings: Settings, tmp_path: Path, name: str, gate=PASSED) -> int:
    with database.sessions.begin() as session:
        row = register_candidate(session, settings, variant(tmp_path / name, name))
        row.gate = gate
        return row.id


def roles(database: Database) -> dict[int, str]:
    with database.sessions() as session:
        return {row.id: row.role for row in session.scalars(select(ModelVersion))}


def history(database: Database) -> list[tuple[str, int, int | None]]:
    with database.sessions() as session:
        rows = session.scalars(select(ModelPromotion).order_by(ModelPromotion.id))
        return [(row.action, row.model_version_id, row.previous_id) for row in rows]


def test_a_candidate_is_kept_under_the_data_dir_and_registered_once(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    export = variant(tmp_path / "work" / "export", "site-student")
    with database.sessions.begin() as session:
        row = register_candidate(session, settings, export, parent_id=None, training={"stages": ["dcd"]})
        first_id, path = row.id, Path(row.path)
    assert path.parent == (settings.data_dir / "models").resolve()
    assert path.name.startswith("site-student-") and (path / "decoder.onnx").is_file()
    shutil.rmtree(tmp_path / "work")  # the work folder may go: the candidate stays servable
    assert export_facts(path).version == json.loads((path / "manifest.json").read_text())["version"]
    with database.sessions.begin() as session:
        again = register_candidate(session, settings, path)
        assert (again.id, again.role, again.training) == (first_id, ModelRole.CANDIDATE, {"stages": ["dcd"]})


def test_an_export_already_served_is_not_registered_as_a_candidate(
    database: Database, settings: Settings, bundled_active: int
) -> None:
    with database.sessions.begin() as session, pytest.raises(RegistryError, match="already \\(registered\\)"):
        register_candidate(session, settings, bundled_model_dir())


def test_a_changed_export_is_refused_at_registration(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    export = variant(tmp_path / "export", "site-student")
    (export / "embeddings.npy").write_bytes(b"not the exported table")
    with database.sessions.begin() as session, pytest.raises(UserError, match="checksum mismatch"):
        register_candidate(session, settings, export)


def test_promote_serves_the_candidate_and_retires_what_the_workers_served(
    database: Database, settings: Settings, tmp_path: Path, bundled_active: int
) -> None:
    site = candidate(database, settings, tmp_path, "site-a")
    with database.sessions.begin() as session:
        done = promote(session, session.get_one(ModelVersion, site), "better on site studies")
    assert (done.model_version_id, done.previous_id, done.forced) == (site, bundled_active, False)
    assert roles(database) == {bundled_active: ModelRole.RETIRED, site: ModelRole.SERVING}
    assert history(database) == [("promote", site, bundled_active)]
    with database.sessions.begin() as session, pytest.raises(RegistryError, match="serving already"):
        promote(session, session.get_one(ModelVersion, site))


@pytest.mark.parametrize(
    ("gate", "problem"),
    [(FAILED, "failed the promotion gate \\(F1 0.200"), (None, "has not been through the promotion gate")],
)
def test_a_version_the_gate_did_not_pass_is_promoted_only_with_force(
    database: Database, settings: Settings, tmp_path: Path, bundled_active: int, gate, problem
) -> None:
    site = candidate(database, settings, tmp_path, "site-a", gate=gate)
    with database.sessions.begin() as session, pytest.raises(RegistryError, match=problem):
        promote(session, session.get_one(ModelVersion, site))
    assert roles(database)[site] == ModelRole.CANDIDATE and history(database) == []
    with database.sessions.begin() as session:
        done = promote(session, session.get_one(ModelVersion, site), "the radiologists asked", force=True)
    assert done.forced and roles(database)[site] == ModelRole.SERVING
    with database.sessions() as session:
        [record] = session.scalars(select(ModelPromotion))
        assert record.reason.startswith("the radiologists asked; forced: the version ")


def test_rollback_walks_back_through_the_promotions(
    database: Database, settings: Settings, tmp_path: Path, bundled_active: int
) -> None:
    a, b = (candidate(database, settings, tmp_path, name) for name in ("site-a", "site-b"))
    for version in (a, b):
        with database.sessions.begin() as session:
            promote(session, session.get_one(ModelVersion, version))
    with database.sessions.begin() as session:
        assert rollback(session).model_version_id == a
    assert roles(database) == {bundled_active: ModelRole.RETIRED, a: ModelRole.SERVING, b: ModelRole.RETIRED}
    with database.sessions.begin() as session:
        assert rollback(session, "site-a drafts too long").model_version_id == bundled_active
    assert roles(database)[bundled_active] == ModelRole.SERVING
    with database.sessions.begin() as session, pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(session)
    with database.sessions.begin() as session:  # a retired version may be promoted again, gate or not
        promote(session, session.get_one(ModelVersion, b))
        assert rollback(session).model_version_id == bundled_active
    assert history(database) == [
        ("promote", a, bundled_active),
        ("promote", b, a),
        ("rollback", a, b),
        ("rollback", bundled_active, a),
        ("promote", b, bundled_active),
        ("rollback", bundled_active, b),
    ]


def test_rollback_with_nothing_promoted_says_so(database: Database, bundled_active: int) -> None:
    with database.sessions.begin() as session, pytest.raises(RegistryError, match="nothing to roll back"):
        rollback(session)


def test_a_version_whose_files_changed_is_never_switched_to(
    database: Database, settings: Settings, tmp_path: Path, bundled_active: int
) -> None:
    site = candidate(database, settings, tmp_path, "site-a")
    with database.sessions() as session:
        kept = Path(session.get_one(ModelVersion, site).path)
    (kept / "decoder.onnx").write_bytes(b"truncated")
    with database.sessions.begin() as session, pytest.raises(RegistryError, match="cannot be served"):
        promote(session, session.get_one(ModelVersion, site), force=True)
    assert roles(database)[bundled_active] == ModelRole.REGISTERED


def test_what_is_served_now_and_the_bundled_checkpoints(database: Database, settings: Settings) -> None:
    with database.sessions.begin() as session:
        row = current_version(session, settings)  # no worker has reported: ECHO_MODEL_DIR, registered
        assert Path(row.path) == bundled_model_dir().resolve()
        checkpoints = checkpoints_of(row)
    assert {stage: path.name for stage, path in checkpoints.items()} == {
        "ar": "ar",
        "teacher": "teacher",
        "student": "student",
    }
    assert all((path / "model.safetensors").is_file() for path in checkpoints.values())


# ---- echo-admin models / register / gate / promote / rollback -----------------------------------


def admin(args: list[str], settings: Settings, capsys, monkeypatch) -> tuple[int, str, str]:
    from node.ops.admin import main

    monkeypatch.setenv("ECHO_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["echo-admin", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


def fake_evaluation(found: int):
    from echo.findings import FINDINGS
    from node.learning.gate import Evaluation, StudyDraft

    def evaluate(model_dir, manifest, split, **_):
        drafts = []
        for i in range(6):
            truth = {name: "positive" if name == FINDINGS[i] else "negative" for name in FINDINGS}
            said = truth if i < found else dict.fromkeys(FINDINGS, "negative")
            drafts.append(StudyDraft(f"s{i}", said, truth, 60, 8))
        return Evaluation(str(model_dir), "v", 8, tuple(drafts))

    return evaluate


def test_the_operator_registers_gates_promotes_and_rolls_back(
    database: Database, settings: Settings, tmp_path: Path, bundled_active: int, capsys, monkeypatch
) -> None:
    export = variant(tmp_path / "export", "site-student")
    code, out, _ = admin(
        ["register", str(export), "--from", str(bundled_active)], settings, capsys, monkeypatch
    )
    assert code == 0 and out.startswith("registered candidate version 2 (")
    code, _, err = admin(["promote", "2"], settings, capsys, monkeypatch)
    assert (code, err.strip()) == (
        2,
        "echo-admin: error: version 2 has not been through the promotion gate: give --force to promote it "
        "anyway (recorded)",
    )
    manifest = tmp_path / "held-out.jsonl"
    manifest.write_text('{"id": "x"}\n')
    monkeypatch.setattr("node.learning.gate.check_manifest", lambda *_: 6)
    monkeypatch.setattr("node.learning.gate.check_parity", lambda *_: {"passed": True, "detail": "ok"})
    found = iter((2, 5))  # the candidate names 2 of 6 findings, the serving model 5
    monkeypatch.setattr(
        "node.learning.gate.evaluate_export", lambda *a, **k: fake_evaluation(next(found))(*a, **k)
    )
    code, out, _ = admin(["gate", "2", "--data", str(manifest)], settings, capsys, monkeypatch)
    assert code == 1 and "gate REJECTED on 6 held-out studies" in out
    assert "  F1            0.500 vs 0.909  (margin 0.050)  FAIL" in out
    code, out, _ = admin(["models"], settings, capsys, monkeypatch)
    [line] = [line for line in out.splitlines() if "site-student" in line]
    assert "│ rejected " in line and "│ 1    " in line  # its role and the version it came from
    assert "version 2:" in out and "  reason: F1 0.500 is below the serving 0.909 - 0.050" in out
    code, out, _ = admin(["promote", "2", "--force", "--reason", "trial week"], settings, capsys, monkeypatch)
    assert code == 0 and out.splitlines()[0].startswith(
        "version 2 is serving now, replacing version 1: workers"
    )
    assert "forced: trial week; forced: the version failed the promotion gate (F1 0.500" in out
    code, out, _ = admin(["rollback"], settings, capsys, monkeypatch)
    assert code == 0 and out.startswith("version 1 is serving again (rolled back from version 2)")
    code, out, err = admin(["rollback"], settings, capsys, monkeypatch)
    assert (code, err.strip()) == (
        2,
        "echo-admin: error: no version served before version 1: nothing to roll back to",
    )
    code, out, _ = admin(["models", "--json"], settings, capsys, monkeypatch)
    by_id = {row["id"]: row for row in json.loads(out)}
    assert (by_id[1]["role"], by_id[2]["role"]) == ("serving", "retired")
    assert by_id[2]["gate"]["decision"] == "reject" and by_id[2]["parent_id"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "404"], "no model version is called '404' (see `echo-admin models`)"),
        (["rollback"], "no version is promoted (the workers serve ECHO_MODEL_DIR): nothing to roll back"),
        (["register", "/nowhere"], "model directory /nowhere does not exist"),
        (["retrain", "--from", "1", "--data", "x.jsonl", "--stages", "ar"], "--stages 'ar': use one of"),
    ],
)
def test_operator_mistakes_are_one_line(
    database: Database, settings: Settings, bundled_active: int, capsys, monkeypatch, args, message
) -> None:
    code, out, err = admin(args, settings, capsys, monkeypatch)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith(f"echo-admin: error: {message}")
