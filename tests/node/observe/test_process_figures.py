"""Figures written by other processes into the figures folder are summed at scrape time; a gauge of a
process that died is dropped (a pool process killed at the hard time limit never says so), its
counters are kept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from node.observe.figures_folder import MULTIPROCESS_ENV
from node.observe.http import registry_with
from node.observe.process_figures import ProcessFigures, dead_processes

WRITER = textwrap.dedent(
    """
    import sys
    from prometheus_client import Counter, Gauge
    tasks = Counter("echo_worker_tasks", "t", ["task", "outcome"])
    held = Gauge("echo_worker_model_loaded", "m", ["version"], multiprocess_mode="livesum")
    tasks.labels("echo.infer_study", "succeeded").inc()
    held.labels("v1").set(1)
    print("written", flush=True)
    if sys.argv[1] == "stay":
        sys.stdin.read()
    """
)


def writer(folder: Path, mode: str) -> subprocess.Popen[str]:
    """A process that writes one task and one held model into `folder`, then exits or stays."""
    env = {**os.environ, MULTIPROCESS_ENV: str(folder)}
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, mode],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "written\n"
    return process


def test_counters_of_every_process_add_up_and_only_live_processes_hold_a_model(tmp_path: Path) -> None:
    gone = writer(tmp_path, "exit")
    gone.wait(10)
    alive = writer(tmp_path, "stay")
    try:
        assert dead_processes(tmp_path) == {gone.pid}
        registry = registry_with(ProcessFigures(tmp_path))
        tasks = {"task": "echo.infer_study", "outcome": "succeeded"}
        assert registry.get_sample_value("echo_worker_tasks_total", tasks) == 2
        assert registry.get_sample_value("echo_worker_model_loaded", {"version": "v1"}) == 1
        assert dead_processes(tmp_path) == set(), "the dead process's gauge file is gone"
    finally:
        assert alive.stdin is not None
        alive.stdin.close()
        alive.wait(10)


def test_no_folder_yet_is_no_figures(tmp_path: Path) -> None:
    assert list(ProcessFigures(tmp_path / "not-yet").collect()) == []
