"""The embedded node's worker: `echo-worker` as a child process on both queues, restarted if it dies.

A child process, not a thread: Celery's time limits and worker-lost handling need a pool
process, and a crash in inference must not take the SCP down. The child gets the parent's
effective settings as ECHO_* variables, so both read the same database and broker whatever
mix of file, environment and overrides the parent was started with.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from node.broker.app import QUEUES
from node.config.settings import CallerRule, Settings
from node.observe.figures_folder import MULTIPROCESS_ENV, embedded_worker_folder, fresh_folder

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


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
