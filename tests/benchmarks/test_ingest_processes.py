"""benchmarks/ingest.py's `node-processes` receiver: the node's SCP and ingest forked into several
processes on one port, storing into one spool and one database, and counted from it."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.append(str(BENCHMARKS))  # after everything installed: shadows nothing

import ingest  # noqa: E402
from e2e_peers import send_study  # noqa: E402
from ingest_processes import NodeProcesses, process_cpu_seconds  # noqa: E402


@pytest.fixture
def receiver():
    processes = NodeProcesses("", processes=2)
    yield processes
    processes.stop()


def test_every_instance_sent_to_the_shared_port_is_stored_once(receiver, tmp_path: Path) -> None:
    files_dir = tmp_path / "files"
    files_dir.mkdir()
    studies = ingest.make_studies(files_dir, 6, 16, (1, 2), seed=0)
    port = receiver.start(tmp_path / "run")
    assert len(receiver.children) == 2 and all(child.is_alive() for child in receiver.children)

    senders = [threading.Thread(target=send_study, args=(files, port)) for files in studies]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)

    assert receiver.count() == 6
    stored = [p for p in (tmp_path / "run" / "node").rglob("*") if p.is_file() and p.suffix == ".dcm"]
    assert len(stored) == 6
    assert receiver.cpu_seconds() > 0


def test_stop_ends_the_processes(receiver, tmp_path: Path) -> None:
    receiver.start(tmp_path / "run")
    children = list(receiver.children)
    receiver.stop()
    assert receiver.children == [] and not any(child.is_alive() for child in children)
    with pytest.raises(FileNotFoundError):
        process_cpu_seconds(children[0].pid)
