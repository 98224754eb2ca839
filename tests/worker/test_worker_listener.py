"""`echo-worker` as an operator runs it, with its own listener (ECHO_WORKER_HTTP) and JSON logs.

A real worker process (Celery's prefork pool, the bundled model, the embedded SQLite broker) drafts
a study whose header holds a patient's name, id and accession: its /metrics show the worker's own
figures beside the node's, and its log lines are JSON, name the study by the node's id and never
carry the patient's identifiers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from echo.runtime.manifest import load_manifest
from node.broker.app import DELIVER_REPORT, INFER_STUDY
from node.config.settings import Settings
from tests.node.observe.test_broker_probe import free_port
from tests.node.observe.test_metrics import samples
from worker.app import create_worker_app

REPOSITORY = Path(__file__).resolve().parents[2]
PATIENT = {"PatientName": "Zyxwv^Quinta", "PatientID": "MRN7731942", "AccessionNumber": "ACC7731942"}


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError) as error:
        return getattr(error, "code", 0), str(error)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, logs: Callable[[], str]) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs()[-4000:]}")


@pytest.mark.integration
def test_the_worker_serves_its_own_figures_and_logs_json_without_patient_identifiers(
    settings: Settings, database, store_study, images, tmp_path: Path
) -> None:
    (settings.spool_dir).mkdir(parents=True, exist_ok=True)
    study_id = store_study(images.chest(**PATIENT))
    app = create_worker_app(settings)
    app.send_task(INFER_STUDY, args=[study_id])
    app.send_task(DELIVER_REPORT, args=[987654])  # no such report: nothing to send, the task succeeds
    port, temp = free_port(), tmp_path / "tmp"
    temp.mkdir()
    env = {name: value for name, value in os.environ.items() if not name.startswith("ECHO_")}
    env |= {"ECHO_DATA_DIR": str(settings.data_dir), "ECHO_WORKER_HTTP": f"127.0.0.1:{port}"}
    env |= {"ECHO_LOG_FORMAT": "json", "ECHO_LOG_LEVEL": "DEBUG", "TMPDIR": str(temp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "--queues", "gpu,io"],
            cwd=REPOSITORY,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    logs = err.read_text
    try:
        tasks = ("echo_worker_tasks_total", (("outcome", "succeeded"), ("task", INFER_STUDY)))
        delivered = ("echo_worker_tasks_total", (("outcome", "succeeded"), ("task", DELIVER_REPORT)))

        def both_tasks_done() -> str | None:
            status, body = get(port, "/metrics")
            found = samples(body) if status == 200 else {}
            return body if found.get(tasks) == 1 and found.get(delivered) == 1 else None

        body = str(wait_for(both_tasks_done, 90, "the worker's figures for both tasks", logs))
        assert get(port, "/readyz") == (200, "ready\n")
        assert get(port, "/healthz") == (200, "ok\n")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)

    found = samples(body)
    manifest = load_manifest(settings.effective_model_dir, verify=False)
    loaded = ("echo_worker_model_loaded", (("model", manifest.name), ("provider", "CPUExecutionProvider"),
                                           ("version", manifest.version)))  # fmt: skip
    assert found[loaded] == 1, "one pool process holds the model"
    assert found[("echo_studies", (("state", "queued"),))] == 0, "the node's figures too"
    assert found[("echo_queue_messages", (("queue", "gpu"),))] == 0
    families = [family.name for family in text_string_to_metric_families(body)]
    assert families.count("echo_inference_seconds") == 1  # the database's, never a second one
    assert not list(temp.glob("echo-worker-figures-*")), "the figures folder goes with the worker"

    lines = [json.loads(line) for line in logs().splitlines()]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    drafted = [
        line for line in lines if line["logger"] == "worker.tasks" and "infer_study" in line["message"]
    ]
    assert drafted and all(line["study_id"] == study_id for line in drafted), drafted
    assert any(line.get("study_id") == study_id and line["logger"] != "worker.tasks" for line in lines)
    # Celery's shutdown notice, printed by its SIGTERM handler, is a JSON line too: stdout stays empty
    assert [line for line in lines if line["message"] == "worker: Warm shutdown (MainProcess)"]
    assert out.read_text() == ""
    everything = logs() + out.read_text()
    for value in (*PATIENT.values(), "Zyxwv", "Quinta"):
        assert value not in everything, f"{value!r} is in the worker's output"
