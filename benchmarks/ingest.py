"""Ingest throughput: DCMTK's storescu sending the same files to our node and to DCMTK's own storescp.

    .venv/bin/python benchmarks/ingest.py [--n 200] [--size 512] [--repeats 3] [--database-url URL]

Makes N CR images (size x size, 16-bit, explicit VR little endian, 20 per study), starts the node
in-process (SCP, ingest, SQLite or the given database, study assembly; no worker) and storescp
writing into a temp dir, then times storescu sending all N files in one association to each,
alternating, `--repeats` times. Both sides accept PDUs of the same size. Prints a table with
instances per second (best of the repeats) and the node/storescp ratio; every run is checked
(N rows in the database, N files in storescp's folder) before it counts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import typer
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid
from rich.console import Console
from rich.progress import track
from rich.table import Table
from sqlalchemy import func, select

from node.config.settings import load_settings
from node.config.startup import configure_logging
from node.dicom.scp import MAX_PDU_BYTES
from node.serve.runtime import Node
from node.store.models import Instance

IMAGES_PER_STUDY = 20
# DCMTK leaves Nagle's algorithm on unless told otherwise; with delayed ACKs that costs ~40 ms per
# C-STORE round trip and would measure TCP, not the receivers. Both senders and storescp get it off.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


class _CountingPublisher:
    def __init__(self) -> None:
        self.count = 0

    def publish_inference(self, study_id: int) -> None:
        self.count += 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_files(folder: Path, n: int, size: int) -> int:
    """N CR files in `folder`; returns the total bytes."""
    rng = np.random.default_rng(0)
    total = 0
    study_uid = series_uid = generate_uid()
    for index in track(range(n), description=f"making {n} CR images {size}x{size}"):
        if index % IMAGES_PER_STUDY == 0:
            study_uid, series_uid = generate_uid(), generate_uid()
        image = Dataset()
        image.file_meta = FileMetaDataset()
        image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        image.SOPClassUID = ComputedRadiographyImageStorage
        image.SOPInstanceUID = generate_uid()
        image.StudyInstanceUID = study_uid
        image.SeriesInstanceUID = series_uid
        image.PatientID = f"BENCH{index // IMAGES_PER_STUDY:04d}"
        image.AccessionNumber = f"B{index // IMAGES_PER_STUDY:06d}"
        image.Modality = "CR"
        image.BodyPartExamined = "CHEST"
        image.SamplesPerPixel = 1
        image.PhotometricInterpretation = "MONOCHROME2"
        image.Rows = image.Columns = size
        image.BitsAllocated, image.BitsStored, image.HighBit, image.PixelRepresentation = 16, 12, 11, 0
        image.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
        path = folder / f"{index:05d}.dcm"
        image.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return total


def send(folder: Path, port: int, called_ae: str) -> float:
    """Seconds storescu takes to send every file in `folder` in one association (fails loudly)."""
    started = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aet", "BENCH", "-aec", called_ae, "-R", "+sd", "127.0.0.1", str(port), str(folder)],
        capture_output=True,
        text=True,
        check=False,
        env=DCMTK_ENV,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"storescu to {called_ae} failed ({result.returncode}): {result.stderr.strip()}")
    return seconds


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = subprocess.run(["echoscu", "-aec", "ANY-SCP", "127.0.0.1", str(port)], capture_output=True)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing answers C-ECHO on port {port}")


def run_node(folder: Path, work: Path, n: int, database_url: str) -> float:
    settings = load_settings(
        data_dir=work / "node",
        port=_free_port(),
        database_url=database_url,
        quiet_seconds=10,
        log_level="WARNING",
    )
    node = Node(settings, publisher=_CountingPublisher(), embedded_worker=False, bind_address="127.0.0.1")
    node.start()
    try:
        seconds = send(folder, settings.port, settings.ae_title)
        assert node.database is not None
        with node.database.sessions() as session:
            stored = session.scalar(select(func.count()).select_from(Instance))
        if stored != n:
            raise SystemExit(f"the node recorded {stored} of {n} instances")
        with node.database.engine.begin() as connection:  # leave a PostgreSQL database as we found it
            for table in ("instances", "study_events", "studies", "associations"):
                connection.exec_driver_sql(f"DELETE FROM {table}")
    finally:
        node.stop()
        shutil.rmtree(work / "node", ignore_errors=True)
    return seconds


def run_storescp(folder: Path, work: Path, n: int) -> float:
    output = work / "storescp"
    output.mkdir()
    port = _free_port()
    server = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "--max-pdu", str(MAX_PDU_BYTES), "-od", str(output), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=DCMTK_ENV,
    )
    try:
        wait_for_port(port)
        seconds = send(folder, port, "STORESCP")
        stored = len(list(output.iterdir()))
        if stored != n:
            raise SystemExit(f"storescp wrote {stored} of {n} files")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(output, ignore_errors=True)
    return seconds


def main(
    n: int = typer.Option(200, "--n", min=1, help="instances to send"),
    size: int = typer.Option(512, "--size", min=8, help="rows = columns"),
    repeats: int = typer.Option(3, "--repeats", min=1, help="runs per target; the best counts"),
    database_url: str = typer.Option(
        "", "--database-url", help="node database (default: SQLite in a temp dir)"
    ),
) -> None:
    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install DCMTK (Debian package dcmtk)")
    configure_logging("WARNING")
    console = Console()
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as temp:
        work = Path(temp)
        folder = work / "files"
        folder.mkdir()
        total_bytes = make_files(folder, n, size)
        node_runs: list[float] = []
        dcmtk_runs: list[float] = []
        for _ in track(range(repeats), description="sending (node, then storescp)"):
            node_runs.append(run_node(folder, work, n, database_url))
            dcmtk_runs.append(run_storescp(folder, work, n))
    megabytes = total_bytes / 1e6
    table = Table(
        title=f"C-STORE ingest: {n} CR images {size}x{size} 16-bit ({megabytes:.0f} MB), best of {repeats}"
    )
    for column in ("receiver", "seconds", "instances/s", "MB/s", "all runs (s)"):
        table.add_column(column, justify="right" if column != "receiver" else "left")
    rows = (("ECHO node (pynetdicom + ingest + DB)", node_runs), ("DCMTK storescp", dcmtk_runs))
    for name, runs in rows:
        best = min(runs)
        table.add_row(
            name,
            f"{best:.2f}",
            f"{n / best:.1f}",
            f"{megabytes / best:.1f}",
            " ".join(f"{r:.2f}" for r in runs),
        )
    console.print(table)
    console.print(f"node / storescp throughput ratio: {min(dcmtk_runs) / min(node_runs):.2f}")
    console.print(
        "The node answers success only after fsync of the file, its folder and the database commit;"
        " storescp fsyncs nothing."
    )


if __name__ == "__main__":
    typer.run(main)
