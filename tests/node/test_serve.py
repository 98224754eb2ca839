"""`echo-node serve` as an operator runs it: one command, the whole embedded node, Ctrl-C stops it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from node.config.settings import load_settings
from node.store.database import open_database
from node.store.models import Job, Study
from node.store.states import JobState, StudyState

REPOSITORY = Path(__file__).resolve().parents[2]


def serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "node.serve.cli", "serve", *args],
        cwd=REPOSITORY,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.integration
def test_one_command_receives_assembles_and_runs_the_task(
    tmp_path: Path, dcmtk, dicom, wait_for, make_settings
) -> None:
    port = make_settings().port
    data_dir = tmp_path / "node"
    env = {
        "ECHO_DATA_DIR": str(data_dir),
        "ECHO_PORT": str(port),
        "ECHO_QUIET_SECONDS": "0.5",
        "ECHO_ALLOWED_CALLERS": "STORESCU",
    }
    node = serve(env)
    try:
        echo = ("echoscu", "-aet", "STORESCU", "-aec", "ECHO", "127.0.0.1", str(port))
        wait_for(
            lambda: dcmtk(*echo).returncode == 0 or node.poll() is not None, timeout_s=30, what="the SCP"
        )
        assert node.poll() is None, node.stderr.read() if node.stderr else ""
        image = dicom.save(dicom.chest_image(), tmp_path / "cr.dcm")
        stored = dcmtk(
            "storescu", "-aet", "STORESCU", "-aec", "ECHO", "-R", "127.0.0.1", str(port), str(image)
        )
        assert stored.returncode == 0, stored.stderr
        database = open_database(load_settings(data_dir=data_dir))
        try:

            def job_states() -> list[JobState]:
                with database.sessions() as session:
                    return list(session.scalars(select(Job.state)))

            wait_for(
                lambda: job_states() == [JobState.SUCCEEDED], timeout_s=45, what="the embedded worker's job"
            )
            with database.sessions() as session:
                study = session.scalars(select(Study)).one()
            # No PACS or RIS configured: the bundled model's draft is stored and the study rests there.
            assert study.state is StudyState.INFERRED and study.enqueued_at is not None
        finally:
            database.dispose()
    finally:
        node.send_signal(signal.SIGINT)
        _, err = node.communicate(timeout=60)
    assert node.returncode == 0, err
    assert "Traceback" not in err
    assert "node stopped" in err


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    node = serve({"ECHO_DATA_DIR": str(tmp_path), "ECHO_QUIET_SECONDS": "-1"})
    _, err = node.communicate(timeout=60)
    assert node.returncode == 2
    assert err.splitlines() == [
        "echo-node: error: bad setting ECHO_QUIET_SECONDS: Input should be greater than or equal to 0"
    ]


def test_a_missing_settings_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    node = serve({"ECHO_DATA_DIR": str(tmp_path)}, "--config", str(tmp_path / "nope.toml"))
    _, err = node.communicate(timeout=60)
    assert node.returncode == 2
    assert err.splitlines() == [f"echo-node: error: settings file {tmp_path / 'nope.toml'} does not exist"]


@pytest.mark.integration
def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        node = serve(
            {
                "ECHO_DATA_DIR": str(tmp_path),
                "ECHO_PORT": str(port),
                "ECHO_BROKER_URL": "redis://127.0.0.1:6379/15",
            }
        )
        _, err = node.communicate(timeout=60)
    assert node.returncode == 2
    assert err.splitlines()[-1] == f"echo-node: error: cannot listen on port {port}: Address already in use"
    assert "Traceback" not in err


def test_an_unusable_data_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    node = serve({"ECHO_DATA_DIR": str(blocker / "data")})
    _, err = node.communicate(timeout=60)
    assert node.returncode == 2
    assert (
        err.splitlines()[-1]
        == f"echo-node: error: cannot create the spool folder {blocker / 'data' / 'spool'}: Not a directory"
    )
