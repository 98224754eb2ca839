"""End-to-end throughput and latency: C-STORE in, ORU ACK out, on the embedded default and on Redis + PostgreSQL.

    .venv/bin/python benchmarks/e2e.py [--n 20] [--quiet 1.0] [--concurrency 1] [--model-dir DIR]
                                       [--configs embedded,redis-postgresql]

Writes N synthetic studies (frontal, and a lateral where the case has one) and, per configuration,
starts a whole site on loopback: the node (`echo-node serve`; embedded: SQLite, the SQL broker and
the worker child; redis-postgresql: a fresh PostgreSQL database, Redis database 10 and a separate
`echo-worker --queues gpu,io`), DCMTK's storescp as the PACS, and python-hl7's MLLP server as the RIS
(it answers AA and notes the time). One warm-up study (model load) is sent and answered first and not
counted; then one study alone ("idle s": the latency without a queue); then the N studies, one
association each, as fast as the node takes them (p50/p95: latency under that burst).

Latency: from the end of a study's C-STORE association to the RIS sending its ACK; it includes the
node's quiet period (`--quiet`), which is how long the node waits for more images of a study.
Throughput: studies answered per minute, from the first C-STORE to the last ACK.
The model is the bundled one if it exists, else a tiny random student (plumbing speed, not quality).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import hl7
import hl7.mllp
import psycopg
import redis
import typer
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from echo.data.synthetic import generate_dataset
from node.config.settings import bundled_model_dir

REPOSITORY = Path(__file__).resolve().parent.parent
CONFIGS = ("embedded", "redis-postgresql")
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/10"  # the benchmark's own database (tests/e2e uses 11)
CALLING_AE = "BENCH"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
console = Console(width=max(100, Console().width))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the RIS: python-hl7's asyncio MLLP server, noting when each accession's ACK went out -----------


@dataclass
class AckClock:
    port: int = 0
    acked: dict[str, float] = field(default_factory=dict)  # accession -> time.monotonic() of the ACK
    _loop: asyncio.AbstractEventLoop | None = None

    async def _client(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
                self.acked.setdefault(str(message.segment("OBR")[18]), time.monotonic())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(
                hl7.mllp.start_hl7_server(self._client, "127.0.0.1", 0, encoding="utf-8")
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)


# --- a site ----------------------------------------------------------------------------------------


@dataclass
class Run:
    config: str
    sent_at: dict[str, float]
    acked: dict[str, float]
    first_sent: float
    workers: int
    idle_latency: float  # one study on an idle node, before the burst

    @property
    def latencies(self) -> list[float]:
        return sorted(self.acked[accession] - sent for accession, sent in self.sent_at.items())

    @property
    def per_minute(self) -> float:
        return len(self.sent_at) / (max(self.acked[a] for a in self.sent_at) - self.first_sent) * 60


def send_study(files: list[Path], port: int) -> None:
    ae = AE(ae_title=CALLING_AE)
    datasets = [dcmread(path) for path in files]
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, [str(dataset.file_meta.TransferSyntaxUID)])
    association = ae.associate("127.0.0.1", port, ae_title="ECHO")
    if not association.is_established:
        raise SystemExit(f"the node on port {port} refused the association")
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            if status.get("Status") != 0x0000:
                raise SystemExit(f"the node answered C-STORE status {status.get('Status')}")
    finally:
        association.release()


def wait_for_node(port: int, processes: list[subprocess.Popen[bytes]], timeout_s: float = 90) -> None:
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"a node process exited with status {process.returncode}; see its log")
        association = ae.associate("127.0.0.1", port, ae_title="ECHO")
        if association.is_established:
            association.release()
            return
        time.sleep(0.3)
    raise SystemExit(f"the node did not answer C-ECHO on port {port} within {timeout_s} s")


def run_site(
    config: str,
    studies: list[tuple[str, list[Path]]],
    warm_up: tuple[str, list[Path]],
    idle: tuple[str, list[Path]],
    *,
    work: Path,
    model_dir: Path,
    pacs: str,
    ris: AckClock,
    quiet: float,
    concurrency: int,
    timeout_s: float,
) -> Run:
    port = free_port()
    ris.acked.clear()
    env = {
        **os.environ,
        "ECHO_DATA_DIR": str(work / config),
        "ECHO_PORT": str(port),
        "ECHO_QUIET_SECONDS": str(quiet),
        "ECHO_ALLOWED_CALLERS": CALLING_AE,
        "ECHO_MODEL_DIR": str(model_dir),
        "ECHO_PACS": pacs,
        "ECHO_RIS": f"127.0.0.1:{ris.port}",
        "ECHO_DELIVERY_BACKOFF_SECONDS": "0.5",
        "ECHO_LOG_LEVEL": "WARNING",
    }
    database = None
    if config == "redis-postgresql":
        database = f"echo_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        redis.Redis.from_url(REDIS_URL).flushdb()
        env["ECHO_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        env["ECHO_BROKER_URL"] = REDIS_URL
    commands = [["-m", "node.serve.cli", "serve"]]
    if config == "redis-postgresql":
        commands.append(["-m", "worker.cli", "--queues", "gpu,io", "--concurrency", str(concurrency)])
    processes = []
    for index, command in enumerate(commands):
        log = (work / f"{config}-{index}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, *command], cwd=REPOSITORY, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        )
    try:
        wait_for_node(port, processes)
        send_study(warm_up[1], port)
        wait_for_acks(ris, [warm_up[0]], timeout_s, f"{config}: warm-up (model load)")
        send_study(idle[1], port)
        idle_sent = time.monotonic()
        wait_for_acks(ris, [idle[0]], timeout_s, f"{config}: one study on an idle node")
        idle_latency = ris.acked[idle[0]] - idle_sent
        sent_at: dict[str, float] = {}
        first_sent = time.monotonic()
        for accession, files in studies:
            send_study(files, port)
            sent_at[accession] = time.monotonic()
        wait_for_acks(ris, list(sent_at), timeout_s, f"{config}: {len(studies)} studies")
        return Run(config, sent_at, {a: ris.acked[a] for a in sent_at}, first_sent, concurrency, idle_latency)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        if database is not None:
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            redis.Redis.from_url(REDIS_URL).flushdb()


def wait_for_acks(ris: AckClock, accessions: list[str], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"waiting for the RIS ACKs ({what})", total=len(accessions))
        while True:
            done = sum(accession in ris.acked for accession in accessions)
            progress.update(task, completed=done)
            if done == len(accessions):
                return
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"{what}: only {done} of {len(accessions)} ORUs reached the RIS in {timeout_s} s"
                )
            time.sleep(0.05)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values (p95 of 20 values is the 19th)."""
    return values[max(0, min(len(values) - 1, math.ceil(fraction * len(values)) - 1))]


def default_model(work: Path) -> tuple[Path, str]:
    bundled = bundled_model_dir()
    if (bundled / "manifest.json").is_file():
        return bundled, "bundled"
    from echo.export.random_tiny import exported_random_model  # torch: only when there is no bundled model

    with console.status("no bundled model: exporting a tiny random student"):
        return exported_random_model(work / "tiny")[1], "tiny random"


@app.command()
def main(
    n: int = typer.Option(20, "--n", min=1, help="studies per configuration"),
    seed: int = typer.Option(11, "--seed", help="synthetic benchmark seed"),
    size: int = typer.Option(256, "--size", min=64, max=1024, help="image side in pixels"),
    quiet: float = typer.Option(1.0, "--quiet", min=0.0, help="the node's quiet period (seconds)"),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="worker processes (redis-postgresql)"),
    configs: str = typer.Option(
        ",".join(CONFIGS), "--configs", help=f"comma-separated, of: {', '.join(CONFIGS)}"
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="exported model (default: bundled, else tiny)"
    ),
    timeout: float = typer.Option(600.0, "--timeout", min=1.0, help="seconds to wait for the ACKs of a run"),
) -> None:
    chosen = [name.strip() for name in configs.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(CONFIGS))
    if not chosen or unknown:
        raise SystemExit(f"--configs: unknown {', '.join(unknown) or '(none)'}; use {', '.join(CONFIGS)}")
    if shutil.which("storescp") is None:
        raise SystemExit("storescp (DCMTK) is needed as the PACS: apt-get install dcmtk")
    work = Path(tempfile.mkdtemp(prefix="echo-e2e-bench-"))
    try:
        model, model_label = (model_dir, str(model_dir)) if model_dir else default_model(work)
        with console.status(f"writing {n + 2} synthetic studies"):
            generate_dataset(n + 2, seed, work / "studies", size=size)
        rows = sorted((work / "studies" / "studies").iterdir())
        studies = [
            (
                dcmread(next(folder.iterdir()), stop_before_pixels=True).AccessionNumber,
                sorted(folder.iterdir()),
            )
            for folder in rows
        ]
        ris = AckClock()
        ris.start()
        pacs_port = free_port()
        (work / "pacs").mkdir()
        pacs = subprocess.Popen(
            ["storescp", "-aet", "PACS", "-od", str(work / "pacs"), str(pacs_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runs = []
        try:
            for config in chosen:  # each on a fresh database: the same studies are new to it
                console.print(
                    f"[bold]{config}[/bold]: {n} studies, quiet period {quiet:g} s, model {model_label}"
                )
                runs.append(
                    run_site(
                        config,
                        studies[2:],
                        studies[0],
                        studies[1],
                        work=work,
                        model_dir=model,
                        pacs=f"PACS@127.0.0.1:{pacs_port}",
                        ris=ris,
                        quiet=quiet,
                        concurrency=concurrency if config == "redis-postgresql" else 1,
                        timeout_s=timeout,
                    )
                )
        finally:
            pacs.terminate()
            pacs.wait(10)
        print_table(runs, quiet, model_label, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(runs: list[Run], quiet: float, model_label: str, size: int) -> None:
    table = Table(title=f"End to end: C-STORE end -> RIS ACK ({model_label} model, {size}px images)")
    columns = (
        "configuration",
        "studies",
        "workers",
        "studies/min",
        "p50 s",
        "p95 s",
        "max s",
        "idle s",
        "quiet s",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for run in runs:
        latencies = run.latencies
        table.add_row(
            run.config,
            str(len(latencies)),
            str(run.workers),
            f"{run.per_minute:.1f}",
            f"{statistics.median(latencies):.2f}",
            f"{percentile(latencies, 0.95):.2f}",
            f"{latencies[-1]:.2f}",
            f"{run.idle_latency:.2f}",
            f"{quiet:g}",
        )
    console.print(table)


if __name__ == "__main__":
    app()
