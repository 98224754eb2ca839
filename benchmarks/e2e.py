"""End to end: C-STORE in, ORU ACK out, on the embedded default and on Redis + PostgreSQL, stage by stage.

    .venv/bin/python benchmarks/e2e.py [--sequential 12] [--burst 12] [--quiet 2] [--rounds 1]
                                       [--configs embedded,redis-postgresql] [--baseline DIR]
                                       [--model-dir DIR] [--idle-seconds 10]

Writes synthetic studies (frontal, and a lateral where the case has one) and, per configuration,
starts a whole site on loopback: the node (`echo-node serve` with its default settings but the quiet
period and the draft gate, off; embedded: SQLite, the SQL broker and its worker; redis-postgresql: a fresh PostgreSQL
database, Redis database 10 and a separate `echo-worker --queues gpu,io`), DCMTK's storescp as the
PACS (with TCP_NODELAY=1: Nagle's algorithm stalls DCMTK peers otherwise), and python-hl7's MLLP
server as the RIS (it answers AA and notes the time). One warm-up study (model load) is answered
first and not counted; then `--sequential` studies one at a time (each sent when the one before was
answered: the latency of a quiet site), then `--burst` studies, one association each, as fast as
the node takes them (the throughput, and the latency under that load).

Latency: from the end of a study's C-STORE association to the RIS's ACK of its ORU; it includes the
quiet period. The stages it splits into are `e2e_stages.STAGES`, read after the run from the node's
database and JSON log (`e2e_stages`). Memory: the RSS of every process of the site's node (serve and
its worker, or serve and the separate worker), once idle after start and once after all the reports;
idle CPU: theirs over `--idle-seconds` after the last report, in % of one core.

Rounds are interleaved (each round runs every site, in the opposite order to the round before), so
load from other work on the machine hits them alike; figures are median (min-max) over rounds.
`--baseline DIR` runs each configuration from another checkout too (e.g. `git worktree add`), in the
same rounds. The model is the bundled one if it exists, else a tiny random student.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
import typer
from e2e_peers import AckClock, free_port, send_study, wait_for_acks, wait_for_node
from e2e_stages import STAGES, LogEvents, Timeline, percentile, read_timelines, stage_percentiles
from pydicom import dcmread
from rich.console import Console
from rich.table import Table

from echo.data.synthetic import generate_dataset
from node.config.settings import bundled_model_dir

REPOSITORY = Path(__file__).resolve().parent.parent
CONFIGS = ("embedded", "redis-postgresql")
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/10"  # the benchmark's own database (tests/e2e uses 11)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
console = Console(width=max(150, Console().width))
Study = tuple[str, list[Path]]  # accession number, files


@dataclass(frozen=True)
class Site:
    config: str
    source: Path  # the checkout its processes run from
    label: str


@dataclass
class Run:
    site: Site
    sequential: list[Timeline]
    burst: list[Timeline]
    burst_per_minute: float
    rss_idle_mb: float
    rss_after_mb: float
    idle_cpu_percent: float


# --- the node's processes --------------------------------------------------------------------------


def tree(pids: list[int]) -> list[int]:
    """The processes and every descendant still running."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in tree(pids):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total_kb += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    return total_kb / 1024


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in tree(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def start_site(
    site: Site, env: dict[str, str], work: Path, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    commands = [["-m", "node.serve.cli", "serve"]]
    if site.config == "redis-postgresql":
        commands.append(["-m", "worker.cli", "--queues", "gpu,io", "--concurrency", str(concurrency)])
    processes = []
    for index, command in enumerate(commands):
        with (work / f"{index}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, *command], cwd=site.source, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
    return processes


def stop_site(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


# --- one run of one site ---------------------------------------------------------------------------


def run_site(
    site: Site,
    warm_up: Study,
    sequential: list[Study],
    burst: list[Study],
    *,
    work: Path,
    model_dir: Path,
    pacs: str,
    ris: AckClock,
    quiet: float,
    concurrency: int,
    idle_s: float,
    timeout_s: float,
) -> Run:
    work.mkdir(parents=True)
    port = free_port()
    ris.acked.clear()
    env = {
        **os.environ,
        "PYTHONPATH": str(site.source),
        "ECHO_DATA_DIR": str(work / "data"),
        "ECHO_PORT": str(port),
        "ECHO_HTTP": f"127.0.0.1:{free_port()}",  # on, as by default (its own port per run)
        "ECHO_QUIET_SECONDS": str(quiet),
        "ECHO_ALLOWED_CALLERS": "BENCH",
        "ECHO_MODEL_DIR": str(model_dir),
        "ECHO_PACS": pacs,
        "ECHO_RIS": f"127.0.0.1:{ris.port}",
        # Off: a draft the gate holds never reaches the RIS (the run would wait for it), and one it
        # re-decodes times the gate, not the pipeline.
        "ECHO_DRAFT_GATE": "false",
        "ECHO_LOG_FORMAT": "json",  # the stages' log events (e2e_stages)
        "ECHO_LOG_LEVEL": "INFO",
    }
    database_url = f"sqlite:///{work / 'data' / 'echo.db'}"
    database = None
    if site.config == "redis-postgresql":
        database = f"echo_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        redis.Redis.from_url(REDIS_URL).flushdb()
        database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        env["ECHO_DATABASE_URL"] = database_url
        env["ECHO_BROKER_URL"] = REDIS_URL
    processes = start_site(site, env, work, concurrency)
    pids = [process.pid for process in processes]
    try:
        wait_for_node(port, processes)
        time.sleep(2.0)  # the worker's start-up
        rss_idle = rss_mb(pids)
        send_study(warm_up[1], port)
        wait_for_acks(ris, [warm_up[0]], timeout_s, f"{site.label}: warm-up (model load)", console)
        sent: dict[str, float] = {}
        for accession, files in sequential:
            send_study(files, port)
            sent[accession] = time.time()
            wait_for_acks(ris, [accession], timeout_s, f"{site.label}: one study at a time", console)
        first_sent = time.time()
        for accession, files in burst:
            send_study(files, port)
            sent[accession] = time.time()
        wait_for_acks(
            ris, [a for a, _ in burst], timeout_s, f"{site.label}: a burst of {len(burst)}", console
        )
        per_minute = len(burst) / (max(ris.acked[a] for a, _ in burst) - first_sent) * 60
        time.sleep(2.0)
        rss_after = rss_mb(pids)
        cpu_before = cpu_seconds(pids)
        time.sleep(idle_s)
        idle_cpu = (cpu_seconds(pids) - cpu_before) / idle_s * 100
    finally:
        stop_site(processes)
    try:
        timelines = read_timelines(database_url, sent, ris.acked, LogEvents.read(work.glob("*.log")))
    finally:
        if database is not None:
            with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            redis.Redis.from_url(REDIS_URL).flushdb()
    return Run(
        site,
        timelines[: len(sequential)],
        timelines[len(sequential) :],
        per_minute,
        rss_idle,
        rss_after,
        idle_cpu,
    )


def default_model(work: Path) -> tuple[Path, str]:
    bundled = bundled_model_dir()
    if (bundled / "manifest.json").is_file():
        return bundled, "bundled"
    from echo.export.random_tiny import exported_random_model  # torch: only when there is no bundled model

    with console.status("no bundled model: exporting a tiny random student"):
        return exported_random_model(work / "tiny")[1], "tiny random"


@app.command()
def main(
    sequential: int = typer.Option(12, "--sequential", min=1, help="studies sent one at a time"),
    burst: int = typer.Option(12, "--burst", min=1, help="studies sent at once"),
    rounds: int = typer.Option(1, "--rounds", min=1, help="interleaved rounds of every site"),
    seed: int = typer.Option(11, "--seed", help="synthetic benchmark seed"),
    size: int = typer.Option(256, "--size", min=64, max=1024, help="image side in pixels"),
    quiet: float = typer.Option(2.0, "--quiet", min=0.0, help="the node's quiet period (seconds)"),
    concurrency: int = typer.Option(1, "--concurrency", min=1, help="worker processes (redis-postgresql)"),
    configs: str = typer.Option(
        ",".join(CONFIGS), "--configs", help=f"comma-separated, of: {', '.join(CONFIGS)}"
    ),
    baseline: Path | None = typer.Option(
        None, "--baseline", help="another checkout to run each configuration from too"
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="exported model (default: bundled, else tiny)"
    ),
    idle_seconds: float = typer.Option(10.0, "--idle-seconds", min=1.0, help="idle CPU window"),
    timeout: float = typer.Option(
        180.0, "--timeout", min=1.0, help="seconds to wait for the ACKs of a phase"
    ),
) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the sites on the way out
    chosen = [name.strip() for name in configs.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(CONFIGS))
    if not chosen or unknown:
        raise SystemExit(f"--configs: unknown {', '.join(unknown) or '(none)'}; use {', '.join(CONFIGS)}")
    if shutil.which("storescp") is None:
        raise SystemExit("storescp (DCMTK) is needed as the PACS: apt-get install dcmtk")
    if baseline is not None and not (baseline / "node" / "serve" / "cli.py").is_file():
        raise SystemExit(f"--baseline {baseline}: not a checkout of this repository (no node/serve/cli.py)")
    sites = [
        site
        for config in chosen
        for site in (
            Site(config, REPOSITORY, config),
            *([Site(config, baseline.resolve(), f"{config} (baseline)")] if baseline else []),
        )
    ]
    work = Path(tempfile.mkdtemp(prefix="echo-e2e-bench-"))
    load_before = os.getloadavg()
    try:
        model, model_label = (model_dir, str(model_dir)) if model_dir else default_model(work)
        with console.status(f"writing {1 + sequential + burst} synthetic studies"):
            generate_dataset(1 + sequential + burst, seed, work / "studies", size=size)
        studies = [
            (
                dcmread(next(folder.iterdir()), stop_before_pixels=True).AccessionNumber,
                sorted(folder.iterdir()),
            )
            for folder in sorted((work / "studies" / "studies").iterdir())
        ]
        ris = AckClock()
        ris.start()
        pacs_port = free_port()
        (work / "pacs").mkdir()
        pacs = subprocess.Popen(
            ["storescp", "-aet", "PACS", "-od", str(work / "pacs"), str(pacs_port)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        runs: list[Run] = []
        try:
            for round_number in range(rounds):
                for site in sites if round_number % 2 == 0 else sites[::-1]:
                    console.print(
                        f"round {round_number + 1}/{rounds}: [bold]{site.label}[/bold] "
                        f"(quiet period {quiet:g} s, model {model_label}, load {os.getloadavg()[0]:.2f})"
                    )
                    runs.append(
                        run_site(
                            site,
                            studies[0],
                            studies[1 : 1 + sequential],
                            studies[1 + sequential :],
                            work=work / f"run-{len(runs)}",
                            model_dir=model,
                            pacs=f"PACS@127.0.0.1:{pacs_port}",
                            ris=ris,
                            quiet=quiet,
                            concurrency=concurrency if site.config == "redis-postgresql" else 1,
                            idle_s=idle_seconds,
                            timeout_s=timeout,
                        )
                    )
        finally:
            pacs.terminate()
            pacs.wait(10)
        print_tables(sites, runs, quiet, model_label, size)
        console.print(
            f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, "
            f"after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- the tables ------------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 2) -> str:
    """median (min-max) over rounds; the value alone for one round."""
    middle = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return middle
    return f"{middle} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def print_tables(sites: list[Site], runs: list[Run], quiet: float, model_label: str, size: int) -> None:
    table = Table(
        title=f"End to end: C-STORE end -> RIS ACK ({model_label} model, {size}px, quiet {quiet:g} s)"
    )
    columns = ("site", "rounds", "1-at-a-time p50 s", "p95 s", "burst studies/min", "burst p50 s")
    for column in (*columns, "RSS idle MB", "RSS after MB", "idle CPU %"):
        table.add_column(column, justify="left" if column == "site" else "right")
    for site in sites:
        mine = [run for run in runs if run.site == site]
        lat = [[timeline.latency for timeline in run.sequential] for run in mine]
        burst = [[timeline.latency for timeline in run.burst] for run in mine]
        table.add_row(
            site.label,
            str(len(mine)),
            spread([statistics.median(values) for values in lat]),
            spread([percentile(values, 0.95) for values in lat]),
            spread([run.burst_per_minute for run in mine], 1),
            spread([statistics.median(values) for values in burst]),
            spread([run.rss_idle_mb for run in mine], 0),
            spread([run.rss_after_mb for run in mine], 0),
            spread([run.idle_cpu_percent for run in mine], 1),
        )
    console.print(table)
    for phase in ("sequential", "burst"):
        what = "one study at a time" if phase == "sequential" else "in the burst"
        stages = Table(title=f"Where the time goes, {what}: p50 / p95 s over every round's studies")
        stages.add_column("site")
        for stage in (*STAGES, "total"):
            stages.add_column(stage, justify="right")
        for site in sites:
            timelines = [timeline for run in runs if run.site == site for timeline in getattr(run, phase)]
            p50, p95 = stage_percentiles(timelines, 0.5), stage_percentiles(timelines, 0.95)
            cells = [_pair(p50[stage], p95[stage]) for stage in STAGES]
            total = [timeline.latency for timeline in timelines]
            stages.add_row(site.label, *cells, _pair(percentile(total, 0.5), percentile(total, 0.95)))
        console.print(stages)


def _pair(p50: float | None, p95: float | None) -> str:
    return "-" if p50 is None or p95 is None else f"{p50:.2f} / {p95:.2f}"


if __name__ == "__main__":
    app()
