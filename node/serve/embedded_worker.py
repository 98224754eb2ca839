"""The embedded node's worker: `echo-worker --pool solo` as a child process on both queues, restarted
if it dies, killed if an attempt of its runs past the hard time limit.

A child process, not a thread: a crash or a hang in inference must not take the SCP down, and a
process can be killed. One process, not Celery's parent and pool child: the solo pool runs the task
in the worker itself (about 160 MB less for the node), with the time limits Celery's parent would
enforce kept by `worker.solo_limits`, and by this watch for an attempt stuck where those timers
cannot run. The child gets the parent's effective settings as ECHO_* variables, so both read the
same database and broker whatever mix of file, environment and overrides the parent was started with.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node.broker.app import QUEUES
from node.config.settings import CallerRule, Settings
from node.observe.figures_folder import MULTIPROCESS_ENV, embedded_worker_folder, fresh_folder
from node.store.models import Job
from node.store.states import JobKind, JobState

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
# The worker's own hard-limit timer goes first (`worker.solo_limits`); this watch only for a worker
# whose timers cannot run.
HUNG_MARGIN_S = 30.0


def settings_environment(settings: Settings) -> dict[str, str]:
    """Every setting as the ECHO_* variable that reproduces it."""
    env: dict[str, str] = {}
    for name, value in settings:
        if value is None:
            if type(settings).model_fields[name].default is not None:
                env[f"ECHO_{name.upper()}"] = ""  # switched off (ECHO_HTTP), not left to its default
            continue
        if name == "allowed_callers":
            text = ",".join(_caller(rule) for rule in value)
        elif isinstance(value, tuple):  # comma-separated lists (ECHO_HL7_ALLOWED_FACILITIES)
            text = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"ECHO_{name.upper()}"] = text
    env["ECHO_DATABASE_URL"] = settings.effective_database_url
    env["ECHO_BROKER_URL"] = settings.effective_broker_url
    env["ECHO_DATA_DIR"] = str(settings.data_dir.resolve())
    return env


def _caller(rule: CallerRule) -> str:
    return f"{rule.ae_title}@{rule.host}" if rule.host else rule.ae_title


class EmbeddedWorker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        # Its pool processes' figures (tasks, model held), served on our ECHO_HTTP: a restarted
        # worker adds to them, a new serve starts from none.
        self.figures = fresh_folder(embedded_worker_folder(settings))

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "worker.cli",
            "--queues",
            ",".join(QUEUES),
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--loglevel",
            self.settings.log_level,
            "--name",
            f"echo-embedded-{os.getpid()}@%h",
        ]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "ECHO_CONFIG"}
        env.update(settings_environment(self.settings))
        env.update({"ECHO_WORKER_HTTP": "off", MULTIPROCESS_ENV: str(self.figures)})  # no second listener
        # The child imports the same `worker` package the parent runs, installed or not.
        source_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(self.command(), env=env)
        log.info("embedded worker started (pid %d)", self.process.pid)

    def ensure_running(self) -> bool:
        """Start a new worker if ours exited; True when it did (what the old one held is lost)."""
        if self.process is not None and self.process.poll() is not None:
            log.error("embedded worker exited with status %d; starting a new one", self.process.returncode)
            self.start()
            return True
        return False

    def stop_hung(self, sessions: sessionmaker[Session], hard_limit_s: float, now: datetime) -> bool:
        """Kill the worker if its inference attempt started more than `hard_limit_s` (plus a margin)
        ago; True when it did (the watch then restarts it and the reconciler buries the attempt)."""
        if self.process is None or self.process.poll() is not None:
            return False
        started_before = now - timedelta(seconds=hard_limit_s + HUNG_MARGIN_S)
        with sessions() as session:
            hung = session.scalar(
                select(Job.id).where(
                    Job.kind == JobKind.INFER,
                    Job.state == JobState.RUNNING,
                    Job.worker_host == socket.gethostname(),
                    Job.worker_pid == self.process.pid,
                    Job.started_at < started_before,
                )
            )
        if hung is None:
            return False
        log.error(
            "embedded worker: job %d ran past the hard time limit (%.0f s); killing the worker",
            hung,
            hard_limit_s,
        )
        self.process.kill()
        self.process.wait()
        return True

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: finish the current task), then kill after STOP_TIMEOUT_S."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("embedded worker did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
            self.process.kill()
            self.process.wait()
