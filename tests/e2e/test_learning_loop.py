"""The site learning loop end to end, on a real `echo-node serve` and the real `echo-admin`:

studies of a shifted site are drafted and delivered; the RIS sends the radiologists' signed reports
back over MLLP; `echo-admin quality` scores the drafts against them; `dataset export` and `retrain`
make a candidate that the gate promotes; new studies are drafted by it; a deliberately worse
candidate is refused by the gate; `rollback` brings the previous model back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from node.config.settings import load_settings
from node.store.database import open_database
from node.store.models import Job, ModelVersion, Report, Study
from node.store.states import JobKind, ModelRole, StudyState
from tests.node.hl7.ris import send_signed_report
from tests.node.learning.test_gate import copy_export

REPOSITORY = Path(__file__).resolve().parents[2]
FACILITY = "RADRIS"
SITE_STUDIES = 16
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def tool(env: dict[str, str], *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """An echo-admin or echo-train command as an operator runs it (a child process)."""
    program = {"admin": "node.ops.admin", "train": "echo.cli"}[args[0]]
    return subprocess.run(
        [sys.executable, "-m", program, *args[1:]],
        cwd=REPOSITORY,
        env={**os.environ, **env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> list[dict]:
    """A small riverside set (another detector look, case mix and reporting style than the bundle's)."""
    out = tmp_path_factory.mktemp("riverside")
    made = tool({}, "train", "make-synthetic", "--n", str(SITE_STUDIES + 2), "--seed", "5", "--site", "riverside",
                "--size", "256", "--workers", "1", "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row["paths"] = [str(out / image) for image in row["images"]]
    return rows


@pytest.fixture(scope="module")
def node(
    tmp_path_factory, launch, _module_pacs, _module_ris, model_dir, environment, free_ports, dcmtk, wait
):
    port, hl7_port = free_ports(), free_ports()
    data_dir = tmp_path_factory.mktemp("loop")
    # A fixed site secret: the export's patient-keyed split is then the same on every run.
    (data_dir / "site-secret").write_text("5e" * 32 + "\n")
    (data_dir / "site-secret").chmod(0o600)
    env = environment(data_dir, port, model_dir, pacs=_module_pacs.address, ris=_module_ris.address)
    env |= {"ECHO_HL7_LISTEN": f"127.0.0.1:{hl7_port}", "ECHO_HL7_ALLOWED_FACILITIES": FACILITY}
    env["ECHO_DRAFT_GATE"] = "false"  # the loop is under test: every site study's draft is scored
    launch("serve", ["-m", "node.serve.cli", "serve"], env)
    echo = ("echoscu", "-aet", "ECHODEMO", "-aec", "ECHO", "127.0.0.1", str(port))
    wait(lambda: dcmtk(*echo).returncode == 0, 60, "the node", launch.logs)
    env["hl7_port"] = str(hl7_port)
    return env


def database(env: dict[str, str]):
    return open_database(load_settings(data_dir=Path(env["ECHO_DATA_DIR"])))


def send(env, dcmtk, rows: list[dict]) -> None:
    files = [path for row in rows for path in row["paths"]]
    # -R -xv: the contexts the files need, JPEG 2000 lossless and uncompressed (some images are J2K)
    sent = dcmtk(
        "storescu", "-aet", "STORESCU", "-aec", "ECHO", "-R", "-xv", "127.0.0.1", env["ECHO_PORT"], *files
    )
    assert sent.returncode == 0, sent.stderr


def drafted_by(env, accessions: set[str]) -> dict[str, int]:
    """Accession -> the model version id of its delivered study's latest draft."""
    db = database(env)
    try:
        with db.sessions() as session:
            rows = session.execute(
                select(Study.accession_number, Report.model_version_id)
                .join(Report, Report.study_id == Study.id)
                .where(Study.accession_number.in_(accessions), Study.state == StudyState.DELIVERED)
                .order_by(Report.id)
            ).all()
    finally:
        db.dispose()
    return dict(rows)


def tried_by(env, accession: str) -> int | None:
    """The model version of the study's settled inference attempt (delivered or held by the gate)."""
    db = database(env)
    try:
        with db.sessions() as session:
            return session.scalars(
                select(Job.model_version_id)
                .join(Study, Job.study_id == Study.id)
                .where(
                    Study.accession_number == accession, Job.kind == JobKind.INFER, Job.ended_at.is_not(None)
                )
                .order_by(Job.id.desc())
            ).first()
    finally:
        db.dispose()


def settled(env) -> int:
    """Studies that reached a final state (delivered, failed or skipped)."""
    final = (StudyState.DELIVERED, StudyState.FAILED, StudyState.SKIPPED)
    db = database(env)
    try:
        with db.sessions() as session:
            return len(session.scalars(select(Study.id).where(Study.state.in_(final))).all())
    finally:
        db.dispose()


def serving_id(env) -> int | None:
    db = database(env)
    try:
        with db.sessions() as session:
            found = session.scalars(
                select(ModelVersion).where(ModelVersion.role == ModelRole.SERVING)
            ).first()
            return None if found is None else found.id
    finally:
        db.dispose()


def accessions(rows: list[dict]) -> set[str]:
    return {row["accession_number"] for row in rows}


def test_signed_reports_score_the_drafts_and_a_retrained_model_is_gated_promoted_and_rolled_back(
    node, site, dcmtk, wait, launch, tmp_path
) -> None:
    first, later = site[:SITE_STUDIES], site[SITE_STUDIES:]
    send(node, dcmtk, first)
    # Every study settles: delivered (the draft gate is off: any draft will do for the loop).
    wait(lambda: settled(node) == SITE_STUDIES, 420, "the site studies drafted and delivered", launch.logs)
    done = drafted_by(node, accessions(first))
    assert len(done) == SITE_STUDIES, launch.logs()
    [bundled_id] = set(done.values())

    # The radiologists sign; the RIS sends each signed report back (one of them twice).
    for number, row in enumerate([*first, first[0]]):
        ack = send_signed_report(
            "127.0.0.1", int(node["hl7_port"]), accession=row["accession_number"], study_uid=row["study_instance_uid"],
            findings=row["findings"], impression=row["impression"], control_id=f"SIGNED{number % SITE_STUDIES}",
            facility=FACILITY,
        )  # fmt: skip
        assert ack == "AA"

    quality = tool(node, "admin", "quality", "--json")
    assert quality.returncode == 0, quality.stderr
    [figures] = [row for row in json.loads(quality.stdout) if row["model"]["id"] == bundled_id]
    assert figures["studies"] == len(done)  # every delivered draft scored against its signed report
    assert 0.0 <= figures["f1"] < 1.0 and figures["mean_edit_distance"] > 0  # the drafts were edited

    export = tmp_path / "export"
    exported = tool(node, "admin", "dataset", "export", "--out", str(export),
                    "--val-share", "0.3", "--test-share", "0.3")  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    manifest = export / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    # Every signed study is exported or accounted for (riverside burns text into many images).
    readme = (export / "README.txt").read_text()
    assert f"studies with a current signed report: {SITE_STUDIES}" in readme
    assert (
        f"exported: {len(rows)} studies" in readme
        and f"left out: {SITE_STUDIES - len(rows)} studies" in readme
    )
    assert {row["split"] for row in rows} == {"train", "val", "test"}, readme

    # Retrain the student on the site's signed reports; with this few held-out studies the gate's
    # noise margin is stated on the command line (0.2) rather than estimated.
    retrained = tool(node, "admin", "retrain", "--from", str(bundled_id), "--data", str(manifest), "--stages", "dcd",
                     "--steps", "2", "--rounds", "1", "--collect-per-round", "8", "--val-limit", "4",
                     "--margin", "0.2", "--promote", "--work", str(tmp_path / "work"))  # fmt: skip
    assert retrained.returncode == 0, retrained.stdout + retrained.stderr
    candidate = serving_id(node)
    assert candidate is not None and candidate != bundled_id

    # New studies are drafted by the promoted model, without restarting anything (the gate may hold
    # a broken draft: the attempt still names the model that made it).
    send(node, dcmtk, later[:1])
    after = wait(
        lambda: tried_by(node, later[0]["accession_number"]), 120, "a study after the promotion", launch.logs
    )
    assert after == candidate

    # A model that no longer sees the image is refused by the gate, and cannot be promoted.
    blind = copy_export(tmp_path / "blind", "blind-student", blind=True)
    registered = tool(node, "admin", "register", str(blind))
    assert registered.returncode == 0, registered.stderr
    versions = json.loads(tool(node, "admin", "models", "--json").stdout)
    [blind_id] = [str(row["id"]) for row in versions if row["name"] == "blind-student"]
    gated = tool(node, "admin", "gate", blind_id, "--split", "test", "--data", str(manifest))
    assert gated.returncode == 1, gated.stdout + gated.stderr
    refused = tool(node, "admin", "promote", blind_id)
    assert refused.returncode != 0 and "gate" in refused.stderr
    assert serving_id(node) == candidate

    # Rollback: the previous model serves again.
    rolled = tool(node, "admin", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert serving_id(node) == bundled_id
    send(node, dcmtk, later[1:2])
    back = wait(
        lambda: tried_by(node, later[1]["accession_number"]), 120, "a study after the rollback", launch.logs
    )
    assert back == bundled_id
