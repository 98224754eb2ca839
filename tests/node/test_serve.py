"""`echo-node serve` as an operator runs it: one command, the whole embedded node, Ctrl-C stops it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from node.broker.app import INFER_TIME_LIMIT_S
from node.config.settings import load_settings
from node.serve.embedded_worker import HUNG_MARGIN_S, EmbeddedWorker
from node.store.database import open_database
from node.store.jobs import WorkerProcess, claim_inference
from node.store.models import Job, Study
from node.store.states import JobState, StudyState

REPOSITORY = Path(__file__).resolve().parents[2]


def serve(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen[str]:
    """`echo-node serve` in a process group of its own (its worker and pool processes with it);
    with `log`, its output goes to that file (a long run would fill a pipe nobody reads)."""
    output = log.open("a") if log is not None else subprocess.PIPE
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "node.serve.cli", "serve", *args],
            cwd=REPOSITORY,
            env={**os.environ, **env},
            stdout=output,
            stderr=output,
            text=True,
            start_new_session=True,
        )
    finally:
        if log is not None:
            output.close()


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
        "ECHO_DRAFT_GATE": "false",  # plumbing: the tiny test image's draft is not what is tested
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
                "ECHO_ALLOWED_CALLERS": "STORESCU",  # a production node refuses an empty allow-list
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


# --- a worker killed mid-inference ----------------------------------------------------------------


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


class KillableNode:
    """`echo-node serve` on the embedded default, its output in a log file the assertions quote."""

    def __init__(self, tmp_path: Path, make_settings, dcmtk, dicom, wait_for) -> None:
        self.tmp_path, self.make_settings, self.dcmtk = tmp_path, make_settings, dcmtk
        self.dicom, self.wait_for = dicom, wait_for
        self.data_dir = tmp_path / "node"
        self.log = tmp_path / "node.log"
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.database = open_database(load_settings(data_dir=self.data_dir))

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-8000:] if self.log.is_file() else ""

    def start(self) -> None:
        self.port = self.make_settings().port
        env = {
            "ECHO_DATA_DIR": str(self.data_dir),
            "ECHO_PORT": str(self.port),
            "ECHO_QUIET_SECONDS": "0.5",
            "ECHO_ALLOWED_CALLERS": "STORESCU",
            "ECHO_DRAFT_GATE": "false",  # plumbing: the tiny test image's draft is not what is tested
        }
        self.process = serve(env, log=self.log)
        echo = ("echoscu", "-aet", "STORESCU", "-aec", "ECHO", "127.0.0.1", str(self.port))
        self.wait_for(
            lambda: self.dcmtk(*echo).returncode == 0 or self.process.poll() is not None, 30, "the SCP"
        )
        assert self.process.poll() is None, self.logs()

    def send_study(self) -> None:
        image = self.dicom.save(self.dicom.chest_image(), self.tmp_path / "cr.dcm")
        stored = self.dcmtk(
            "storescu", "-aet", "STORESCU", "-aec", "ECHO", "127.0.0.1", str(self.port), str(image)
        )
        assert stored.returncode == 0, stored.stderr

    def running_attempt_pid(self) -> int:
        """The pool process running the first attempt, as its job row records it."""

        def pid() -> int | None:
            with self.database.sessions() as session:
                job = session.scalars(select(Job).where(Job.state == JobState.RUNNING)).first()
                return job.worker_pid if job is not None else None

        found = self.wait_for(pid, 60, "an inference attempt to start")
        assert isinstance(found, int)
        return found

    def wait_until_inferred(self, timeout_s: float) -> list[tuple[int, JobState, str | None]]:
        def state() -> StudyState | None:
            with self.database.sessions() as session:
                study = session.scalars(select(Study)).first()
                return study.state if study is not None else None

        try:
            self.wait_for(lambda: state() is StudyState.INFERRED, timeout_s, "the study to be inferred")
        except AssertionError as error:
            raise AssertionError(f"{error}\\n{self.logs()}") from None
        with self.database.sessions() as session:
            return [
                (job.attempt, job.state, job.error)
                for job in session.scalars(select(Job).order_by(Job.attempt))
            ]

    def kill_all(self) -> None:
        """kill -9 of the node and every process of its group (worker, pool)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_all()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # anything the group left behind
        self.database.dispose()


@pytest.fixture
def killable_node(tmp_path: Path, make_settings, dcmtk, dicom, wait_for):
    node = KillableNode(tmp_path, make_settings, dcmtk, dicom, wait_for)
    yield node
    node.stop()


@pytest.mark.e2e
@pytest.mark.integration
def test_a_study_survives_kill_9_of_the_embedded_worker(killable_node) -> None:
    """kill -9 of the embedded worker mid-inference: the SQL broker forgets the message it held. The
    node restarts its worker, buries the dead attempt and publishes the study again; it is inferred
    (it used to stay queued for ever). The attempt runs in the worker itself: no pool process."""
    killable_node.start()
    killable_node.send_study()
    child = killable_node.running_attempt_pid()
    assert killable_node.process is not None and _parent_of(child) == killable_node.process.pid
    os.kill(child, signal.SIGKILL)
    jobs = killable_node.wait_until_inferred(60)
    assert [(attempt, state) for attempt, state, _ in jobs] == [(1, JobState.DEAD), (2, JobState.SUCCEEDED)]
    assert jobs[0][2] == f"its worker process (pid {child} on {socket.gethostname()}) is gone"
    assert "embedded worker exited" in killable_node.logs()


@pytest.mark.e2e
@pytest.mark.integration
def test_a_study_survives_kill_9_of_the_whole_node_and_a_restart(killable_node) -> None:
    """kill -9 of the node's whole process tree mid-inference, then `echo-node serve` again: the
    dead attempt no longer blocks the study ("being inferred by job 1")."""
    killable_node.start()
    killable_node.send_study()
    child = killable_node.running_attempt_pid()
    killable_node.kill_all()
    killable_node.start()
    jobs = killable_node.wait_until_inferred(60)
    assert [(attempt, state) for attempt, state, _ in jobs] == [(1, JobState.DEAD), (2, JobState.SUCCEEDED)]
    assert jobs[0][2] == f"its worker process (pid {child} on {socket.gethostname()}) is gone"


# --- what the operator reads at start -------------------------------------------------------------


@pytest.fixture(scope="module")
def started_log(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The output of one `echo-node serve` on the embedded default, from start until its worker
    took the queues (Celery prints its banner before that) and a clean stop."""
    from tests.node.conftest import _wait_for, free_port

    tmp_path = tmp_path_factory.mktemp("ready")
    port, http_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {
        "ECHO_DATA_DIR": str(tmp_path / "node"),
        "ECHO_PORT": str(port),
        "ECHO_HTTP": f"127.0.0.1:{http_port}",
        "ECHO_WORKER_HTTP": "off",
        "ECHO_LOG_LEVEL": "INFO",
    }
    node = serve(env, log=log)
    try:
        _wait_for(
            lambda: "celery.apps.worker" in log.read_text() or node.poll() is not None,
            timeout_s=60,
            what="the embedded worker to take its queues",
        )
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=60)
    return SimpleNamespace(text=log.read_text(), port=port, http_port=http_port, returncode=node.returncode)


def test_serve_logs_one_ready_line_naming_its_ports_model_database_and_broker(started_log) -> None:
    assert started_log.returncode == 0, started_log.text[-3000:]
    ready = [line for line in started_log.text.splitlines() if "echo-node ready" in line]
    assert len(ready) == 1, started_log.text[-3000:]
    assert re.search(
        rf"INFO node\.serve\.ready: echo-node ready: DICOM ECHO@0\.0\.0\.0:{started_log.port}, HL7 off, "
        rf"HTTP 127\.0\.0\.1:{started_log.http_port}, model [0-9a-f]{{16}} \(demo\), database sqlite, "
        r"broker embedded$",
        ready[0],
    ), ready[0]


def test_serve_prints_no_celery_banner_and_no_alembic_chatter_at_info(started_log) -> None:
    text = started_log.text
    assert "[queues]" not in text and ".> transport:" not in text  # Celery's banner
    assert "setup plugin" not in text  # alembic 1.18+: one INFO line per autogenerate plugin at import
    assert "Context impl" not in text and "Will assume" not in text  # alembic's preamble to a migration
    assert "Running upgrade" in text  # what a migration changed is still said


def test_with_json_logs_the_ready_line_is_a_json_record(tmp_path: Path) -> None:
    from tests.node.conftest import _wait_for, free_port

    log = tmp_path / "serve.log"
    env = {
        "ECHO_DATA_DIR": str(tmp_path / "node"),
        "ECHO_PORT": str(free_port()),
        "ECHO_HTTP": "off",
        "ECHO_WORKER_HTTP": "off",
        "ECHO_LOG_FORMAT": "json",
    }
    node = serve(env, log=log)
    try:
        _wait_for(
            lambda: "echo-node ready" in log.read_text() or node.poll() is not None,
            timeout_s=60,
            what="ready",
        )
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=60)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("{")] == [], "a line that is not JSON"
    records = [json.loads(line) for line in lines]
    [ready] = [record for record in records if record["message"].startswith("echo-node ready: ")]
    assert ready["logger"] == "node.serve.ready" and ready["level"] == "INFO"


# --- the embedded worker's hard limit, kept by the node -------------------------------------------


def _running_attempt(database, pid: int, started_at: datetime) -> None:
    with database.sessions.begin() as session:
        study = Study(
            study_instance_uid="1.2.3",
            state=StudyState.QUEUED,
            first_received_at=started_at,
            last_received_at=started_at,
        )
        session.add(study)
        session.flush()
        worker = WorkerProcess(socket.gethostname(), pid)
        claim_inference(session, study.id, "task-1", started_at, timedelta(hours=1), worker=worker)


@pytest.mark.parametrize(("ran_s", "killed"), [(60, False), (INFER_TIME_LIMIT_S + HUNG_MARGIN_S + 1, True)])
def test_a_worker_whose_attempt_runs_past_the_hard_limit_is_killed(
    sqlite_db, make_settings, ran_s: float, killed: bool
) -> None:
    """Its own timers could not stop it (a native call holding the interpreter lock): the node does."""
    worker = EmbeddedWorker(make_settings())
    worker.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        now = datetime.now(UTC)
        _running_attempt(sqlite_db, worker.process.pid, now - timedelta(seconds=ran_s))
        assert worker.stop_hung(sqlite_db.sessions, INFER_TIME_LIMIT_S, now) is killed
        assert (worker.process.poll() is not None) is killed
    finally:
        worker.process.kill()
        worker.process.wait()
