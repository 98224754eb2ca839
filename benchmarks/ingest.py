"""Ingest throughput: the same files sent by DCMTK's storescu to the node, to Orthanc and to DCMTK's storescp.

    .venv/bin/python benchmarks/ingest.py [--n 200] [--size 512] [--rounds 3] [--associations 1,4]
        [--layouts chest,20] [--receivers node,orthanc,storescp,pynetdicom] [--database-url URL]

Makes N CR images (size x size, 16-bit, explicit VR little endian) grouped into studies per layout
(`chest`: 1 and 2 images a study in turn, as chest radiography arrives; `20`: 20 images a study),
then, round after round, sends the same files to each receiver in a fresh state: the node
in-process (SCP, ingest, SQLite or the given database, study assembly; no worker), Orthanc (SQLite
index, ``SyncStorageArea: true``: each file fsynced before success, like the node) and storescp
(writes, fsyncs nothing), and `pynetdicom`: the node's own SCP stack with an ingest that deletes
each file, the most any storage behind pynetdicom can reach. Not run unless named
(`benchmarks/ingest_processes.py`): `pynetdicom-processes`, that in one process per core on one port,
the ceiling of a node that received in several processes, and `node-processes`, the node's own SCP
and ingest so, with one spool and one database. With A associations, A storescu processes run at
once, each sending whole studies of its share in one association. Receivers are interleaved within a
round, so load from other work on the machine hits all of them alike; the ratios are taken within
each round.
Every run is checked (N instances in the node's database, Orthanc's index, storescp's folder)
before it counts. Prints inst/s min/median/max over the rounds, CPU ms per instance (median), and
the ratios node/Orthanc, node/storescp and node/pynetdicom, each taken within a round.

DCMTK's tools and Orthanc (built on DCMTK) leave Nagle's algorithm on unless ``TCP_NODELAY=1`` is
in their environment; with delayed ACKs that costs ~40 ms per C-STORE round trip and would measure
TCP, not the receivers: every DCMTK process gets it. DCMTK is called by full path: the venv's
pynetdicom apps are named storescu/storescp too. Orthanc: `scripts/setup-orthanc.sh`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import typer
from ingest_processes import (
    NodeProcesses,
    SharedPortProcesses,
    clear_node_tables,
    free_port,
    process_cpu_seconds,
)
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from node.config.settings import load_settings
from node.config.startup import configure_logging
from node.dicom.incoming import MB, IncomingFiles
from node.dicom.incoming import install as install_incoming
from node.dicom.limits import ConnectionTable
from node.dicom.scp import MAX_PDU_BYTES, build_ae
from node.dicom.server import start_server
from node.serve.runtime import Node
from node.store.models import Instance

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC = "/usr/sbin/Orthanc"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
LAYOUTS: dict[str, tuple[int, ...]] = {"chest": (1, 2), "20": (20,)}  # images per study, in turn


# --- the files ------------------------------------------------------------------------------------


def make_studies(folder: Path, n: int, size: int, layout: tuple[int, ...], seed: int) -> list[list[Path]]:
    """N CR files in `folder`, as studies of `layout` images in turn; the files per study."""
    rng = np.random.default_rng(seed)
    studies: list[list[Path]] = []
    index = 0
    while index < n:
        count = min(layout[len(studies) % len(layout)], n - index)
        study_uid, series_uid = generate_uid(), generate_uid()
        number = len(studies)
        files = []
        for _ in range(count):
            image = Dataset()
            image.file_meta = FileMetaDataset()
            image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            image.SOPClassUID = ComputedRadiographyImageStorage
            image.SOPInstanceUID = generate_uid()
            image.StudyInstanceUID, image.SeriesInstanceUID = study_uid, series_uid
            image.PatientID = f"BENCH{number:05d}"
            image.AccessionNumber = f"B{number:07d}"
            image.Modality, image.BodyPartExamined = "CR", "CHEST"
            image.ViewPosition = "PA" if len(files) == 0 else "LL"
            image.SamplesPerPixel = 1
            image.PhotometricInterpretation = "MONOCHROME2"
            image.Rows = image.Columns = size
            image.BitsAllocated, image.BitsStored, image.HighBit, image.PixelRepresentation = 16, 12, 11, 0
            image.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
            path = folder / f"{index:05d}.dcm"
            image.save_as(path, enforce_file_format=True)
            files.append(path)
            index += 1
        studies.append(files)
    return studies


def shares(studies: list[list[Path]], associations: int) -> list[list[Path]]:
    """Whole studies dealt round-robin to `associations` senders."""
    out: list[list[Path]] = [[] for _ in range(associations)]
    for number, files in enumerate(studies):
        out[number % associations].extend(files)
    return [files for files in out if files]


def send(shares_: list[list[Path]], port: int, called_ae: str) -> float:
    """Seconds until storescu processes, one association each and all at once, sent their shares."""
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            [STORESCU, "-aet", "BENCH", "-aec", called_ae, "-R", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=DCMTK_ENV,
        )
        for files in shares_
    ]
    errors = [(sender.wait(), sender.stderr.read() if sender.stderr else "") for sender in senders]
    seconds = time.perf_counter() - started
    for code, stderr in errors:
        if code != 0:
            raise SystemExit(f"storescu to {called_ae} failed ({code}): {stderr.strip()[-500:]}")
    return seconds


def wait_for_echo(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [ECHOSCU, "-aec", "ANY-SCP", "127.0.0.1", str(port)], capture_output=True, env=DCMTK_ENV
        )
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing answers C-ECHO on port {port}")


# --- the receivers ---------------------------------------------------------------------------------


class Receiver(Protocol):
    name: str
    ae_title: str

    def start(self, work: Path) -> int:
        """Start on fresh storage under `work`; the DICOM port."""

    def cpu_seconds(self) -> float: ...

    def count(self) -> int:
        """Instances it holds now."""

    def stop(self) -> None: ...


class _CountingPublisher:
    def __init__(self) -> None:
        self.count = 0

    def publish_inference(self, study_id: int) -> None:
        self.count += 1


class NodeReceiver:
    name = "node"

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.ae_title = "ECHO"
        self.node: Node | None = None

    def start(self, work: Path) -> int:
        settings = load_settings(
            data_dir=work / "node",
            port=free_port(),
            database_url=self.database_url,
            quiet_seconds=10,
            log_level="WARNING",
            http="",
        )
        self.ae_title = settings.ae_title
        self.node = Node(
            settings, publisher=_CountingPublisher(), embedded_worker=False, bind_address="127.0.0.1"
        )
        self.node.start()
        return settings.port

    def cpu_seconds(self) -> float:
        return time.process_time()  # this process: the node's threads (the benchmark's own one waits)

    def count(self) -> int:
        assert self.node is not None and self.node.database is not None
        with self.node.database.sessions() as session:
            return session.scalar(select(func.count()).select_from(Instance)) or 0

    def stop(self) -> None:
        if self.node is None or self.node.database is None:
            return
        clear_node_tables(self.node.database.engine)  # leave a PostgreSQL database as we found it
        self.node.stop()
        self.node = None


class PynetdicomReceiver:
    """The node's SCP stack without its ingest: pynetdicom with the node's AE, its event-driven
    association threads and data sets streamed to files, each file deleted instead of stored. No
    storage can be faster than this: the ceiling pynetdicom sets for the node."""

    name = "pynetdicom"
    ae_title = "ECHO"

    def __init__(self, stored: Any = None) -> None:
        self.server: Any = None
        self.stored = stored if stored is not None else multiprocessing.Value("i", 0)  # shared if given

    def start(self, work: Path, port: int | None = None) -> int:
        settings = load_settings(data_dir=work / "pynetdicom", port=port or free_port(), http="")
        incoming = IncomingFiles(settings.spool_dir, settings.max_instance_mb * MB, 0)
        install_incoming()

        def discard(event: evt.Event) -> int:
            streamed = incoming.take(event.dataset_path)
            if streamed is None:
                return 0xC000
            streamed.finish()
            streamed.discard()
            with self.stored.get_lock():
                self.stored.value += 1
            return 0x0000

        self.server = start_server(
            build_ae(settings),
            ("127.0.0.1", settings.port),
            evt_handlers=[(evt.EVT_C_STORE, discard), (evt.EVT_C_ECHO, lambda event: 0x0000)],
            ssl_context=None,
            connections=ConnectionTable(100, 100, 100),
            incoming=incoming,
            handshake_timeout_s=settings.handshake_timeout_seconds,
            idle_timeout_s=settings.idle_timeout_seconds,
        )
        return settings.port

    def cpu_seconds(self) -> float:
        return time.process_time()

    def count(self) -> int:
        return int(self.stored.value)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.stored.value = 0


class PynetdicomProcesses(SharedPortProcesses):
    """`PynetdicomReceiver` in one process per core on one port (`ingest_processes`): what a node
    that received in several processes could reach at most."""

    def __init__(self, processes: int = os.cpu_count() or 2) -> None:
        super().__init__("pynetdicom", processes)
        self.stored = self.forked.Value("i", 0)

    def serve(self, work: Path, port: int) -> object:
        return PynetdicomReceiver(self.stored).start(work, port)

    def count(self) -> int:
        return int(self.stored.value)

    def stop(self) -> None:
        super().stop()
        self.stored.value = 0


class _ProcessReceiver:
    """A receiver that is a process of its own: CPU from /proc, stopped with SIGTERM."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None


class OrthancReceiver(_ProcessReceiver):
    """Orthanc with its SQLite index, every file fsynced before success (``SyncStorageArea``)."""

    name = "Orthanc"
    ae_title = "ORTHANC"
    http_port = 0

    def start(self, work: Path) -> int:
        folder = work / "orthanc"
        folder.mkdir()
        port, self.http_port = free_port(), free_port()
        config = {
            "Name": "echo-bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "StorageCompression": False,
            "SyncStorageArea": True,
            "DicomAet": self.ae_title,
            "DicomPort": port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomThreadsCount": 4,
            "MaximumPduLength": MAX_PDU_BYTES,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SaveJobs": False,
            "Plugins": [],
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.process = subprocess.Popen(
            [ORTHANC, str(folder / "orthanc.json")],
            stdout=subprocess.DEVNULL,
            stderr=(folder / "orthanc.log").open("wb"),
            env=DCMTK_ENV,
            cwd=folder,
        )
        wait_for_echo(port)
        return port

    def count(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/statistics", timeout=10) as answer:
            return int(json.load(answer)["CountInstances"])


class StorescpReceiver(_ProcessReceiver):
    """DCMTK's storescp: writes each data set to a file, fsyncs nothing, keeps no index."""

    name = "storescp"
    ae_title = "STORESCP"
    output = Path()

    def start(self, work: Path) -> int:
        self.output = work / "storescp"
        self.output.mkdir()
        port = free_port()
        self.process = subprocess.Popen(
            [
                STORESCP,
                "-aet",
                self.ae_title,
                "--max-pdu",
                str(MAX_PDU_BYTES),
                "-od",
                str(self.output),
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=DCMTK_ENV,
        )
        wait_for_echo(port)
        return port

    def count(self) -> int:
        return len(list(self.output.iterdir()))


# --- runs and the table ----------------------------------------------------------------------------


@dataclass
class Runs:
    rates: list[float] = field(default_factory=list)  # instances per second, one per round
    cpu_ms: list[float] = field(default_factory=list)  # receiver CPU per instance


def run_once(
    receiver: Receiver, studies: list[list[Path]], associations: int, work: Path
) -> tuple[float, float]:
    """(instances/s, receiver CPU ms per instance) of one run on fresh storage; checked."""
    n = sum(len(files) for files in studies)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{receiver.name}-", dir=work))
    try:
        port = receiver.start(run_dir)
        try:
            cpu = receiver.cpu_seconds()
            seconds = send(shares(studies, associations), port, receiver.ae_title)
            cpu = receiver.cpu_seconds() - cpu
            held = receiver.count()
            if held != n:
                raise SystemExit(f"{receiver.name} holds {held} of {n} instances")
        finally:
            receiver.stop()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return n / seconds, 1000 * cpu / n


def spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def ratio_spread(numerators: list[float], denominators: list[float]) -> str:
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}"


def _csv(value: str, allowed: Callable[[str], bool], what: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    bad = [item for item in items if not allowed(item)]
    if not items or bad:
        raise typer.BadParameter(f"{what}: {', '.join(bad) or 'none given'}")
    return items


def main(
    n: int = typer.Option(200, "--n", min=1, help="instances per run"),
    size: int = typer.Option(512, "--size", min=8, help="rows = columns"),
    rounds: int = typer.Option(3, "--rounds", min=1, help="rounds; each runs every receiver once per set-up"),
    associations_: str = typer.Option(
        "1,4", "--associations", help="concurrent associations, comma-separated"
    ),
    layouts_: str = typer.Option("chest,20", "--layouts", help=f"study layouts: {', '.join(LAYOUTS)}"),
    receivers_: str = typer.Option(
        "node,orthanc,storescp,pynetdicom",
        "--receivers",
        help="node, orthanc, storescp, pynetdicom (the node's SCP keeping nothing: its ceiling), "
        "pynetdicom-processes (the same in one process per core on one port), "
        "node-processes (the node's SCP and ingest in one process per core, one database)",
    ),
    database_url: str = typer.Option(
        "", "--database-url", help="node database (default: SQLite in a temp dir)"
    ),
) -> None:
    association_counts = [int(a) for a in _csv(associations_, str.isdigit, "associations must be numbers")]
    layouts = _csv(layouts_, LAYOUTS.__contains__, "unknown layouts")
    makers: dict[str, Callable[[], Receiver]] = {
        "node": lambda: NodeReceiver(database_url),
        "orthanc": OrthancReceiver,
        "storescp": StorescpReceiver,
        "pynetdicom": PynetdicomReceiver,
        "pynetdicom-processes": PynetdicomProcesses,
        "node-processes": lambda: NodeProcesses(database_url),
    }
    names = _csv(receivers_, makers.__contains__, "unknown receivers")
    tools = [STORESCU, ECHOSCU] + [STORESCP] * ("storescp" in names) + [ORTHANC] * ("orthanc" in names)
    missing = [tool for tool in tools if not Path(tool).exists()]
    if missing:
        raise SystemExit(
            f"not installed: {', '.join(missing)} (apt-get install dcmtk; scripts/setup-orthanc.sh)"
        )
    configure_logging("WARNING")
    receivers = [makers[name]() for name in names]
    console = Console(width=max(Console().width, 120))
    console.print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    setups = [(layout, a) for layout in layouts for a in association_counts]
    results: dict[tuple[str, int, str], Runs] = {
        (layout, a, r.name): Runs() for layout, a in setups for r in receivers
    }
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as temp:
        work = Path(temp)
        studies = {}
        for seed, layout in enumerate(layouts):
            (work / f"files-{layout}").mkdir()
            studies[layout] = make_studies(work / f"files-{layout}", n, size, LAYOUTS[layout], seed)
        total_mb = sum(p.stat().st_size for files in studies[layouts[0]] for p in files) / 1e6
        with Progress(console=console) as progress:
            task = progress.add_task("sending", total=rounds * len(setups) * len(receivers))
            for round_ in range(rounds):
                for layout, a in setups:
                    # rotate who goes first, so no receiver always follows the same one
                    order = receivers[round_ % len(receivers) :] + receivers[: round_ % len(receivers)]
                    for receiver in order:
                        rate, cpu_ms = run_once(receiver, studies[layout], a, work)
                        runs = results[(layout, a, receiver.name)]
                        runs.rates.append(rate)
                        runs.cpu_ms.append(cpu_ms)
                        progress.advance(task)
    console.print(f"load after: {os.getloadavg()[0]:.2f} (1 min)")
    table = Table(
        title=f"C-STORE ingest: {n} CR images {size}x{size} 16-bit ({total_mb:.0f} MB) per run, "
        f"{rounds} rounds; inst/s min / median / max"
    )
    for column in ("images a study", "associations", "receiver", "inst/s", "CPU ms / instance (median)"):
        table.add_column(column)
    for layout, a in setups:
        for receiver in receivers:
            runs = results[(layout, a, receiver.name)]
            table.add_row(
                "1-2" if layout == "chest" else layout,
                str(a),
                receiver.name,
                spread(runs.rates),
                f"{statistics.median(runs.cpu_ms):.1f}",
            )
    console.print(table)
    if "node" in names and len(names) > 1:
        ratios = Table(title="node / peer, per round (min / median / max)")
        peers = [r.name for r in receivers if r.name != "node"]
        for column in ("images a study", "associations", *(f"node / {p}" for p in peers)):
            ratios.add_column(column)
        for layout, a in setups:
            node_rates = results[(layout, a, "node")].rates
            ratios.add_row(
                "1-2" if layout == "chest" else layout,
                str(a),
                *(ratio_spread(node_rates, results[(layout, a, p)].rates) for p in peers),
            )
        console.print(ratios)
    console.print(
        "The node and Orthanc answer success after the file's fsync; storescp fsyncs nothing. "
        "Orthanc's CPU includes its threads; the node's, this process's."
    )


if __name__ == "__main__":
    typer.run(main)
