"""Throughput of the batched worker (ECHO_GPU_BATCH): studies per second at batch 1, 4 and 16.

Two levels, on the bundled demo student (onnxruntime; CPU unless --providers says otherwise):

- engine: `Engine.generate_batch` over N distinct synthetic studies' frontal images, N/b calls of b
  images (the engine decodes images of one grid together; "one grid" rows use studies whose images
  share one, "mixed" rows the studies as they come). The "same" column counts the studies whose
  batched draft has exactly the tokens of their batch-1 draft.
- worker: the same studies ingested into a SQLite node (spool, database), queued, and drafted
  through `worker.inference.StudyInference` (b = 1) or `worker.batch.BatchInference` (b > 1): every
  claim, heartbeat, identity freeze, draft gate and transaction included; "gate on" is production
  (a draft the gate fails is re-decoded alone, multi-step), "gate off" the served decoding alone.

Rounds interleave the batch sizes (each round runs every row once), and a row's figure is its
median over rounds, so a machine that other work slows down slows every row alike.

    python benchmarks/batch_throughput.py                        # N=16, 2 rounds, CPU
    python benchmarks/batch_throughput.py --n 32 --rounds 3 --providers cuda --levels engine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from echo.data.preprocess import preprocess  # noqa: E402
from echo.data.synthetic import generate_study  # noqa: E402
from echo.runtime import Engine  # noqa: E402
from echo.runtime.images import display_pixels  # noqa: E402
from node.config.settings import Settings, bundled_model_dir, load_settings  # noqa: E402
from node.store.database import migrate, open_database  # noqa: E402
from worker.batch import BatchInference  # noqa: E402
from worker.inference import StudyInference, model_facts, register_model  # noqa: E402

SEED = 2026


def studies(engine: Engine, n: int, folder: Path) -> tuple[list[Path], list[Path]]:
    """Frontal image paths of n synthetic studies as they come (mixed grids), and of n studies whose
    images share the most common grid; both drawn from one stream of studies (their folders)."""
    by_grid: dict[tuple[int, int, int], list[Path]] = {}
    mixed: list[Path] = []
    index = 0
    while len(mixed) < n or max((len(paths) for paths in by_grid.values()), default=0) < n:
        row = generate_study(SEED, index, folder)
        path = folder / row.frontal
        grid = preprocess(display_pixels(path), engine.preprocess_config).grid_thw
        by_grid.setdefault(grid, []).append(path)
        if len(mixed) < n:
            mixed.append(path)
        index += 1
    one_grid = max(by_grid.values(), key=len)[:n]
    return mixed, one_grid


def engine_row(
    engine: Engine, images: list[np.ndarray], batch: int
) -> tuple[float, list[tuple[int, ...]], dict[str, float]]:
    """Seconds for every image in calls of `batch`, each image's tokens, and the seconds of each
    stage (vision tower; prefill + decoding) summed over the engine's groups."""
    started = time.perf_counter()
    tokens: list[tuple[int, ...]] = []
    stages = {"vision": 0.0, "decode": 0.0}
    for start in range(0, len(images), batch):
        reports = engine.generate_batch(images[start : start + batch])
        tokens += [report.token_ids for report in reports]
        # The rows of one engine group carry that group's timings: one entry per group.
        for vision, prefill, decode, _ in {
            (t["vision"], t["prefill"], t["decode"], t["total"]) for t in (r.timings for r in reports)
        }:
            stages["vision"] += vision
            stages["decode"] += prefill + decode
    return time.perf_counter() - started, tokens, stages


def queue_studies(settings: Settings, paths: list[Path]) -> tuple[object, list[int]]:
    """A migrated SQLite node holding every study folder of `paths`, each queued (oldest first)."""
    from pydicom import dcmread

    from node.dicom.ingest import Ingestor
    from node.dicom.outcome import ReceivedInstance
    from node.dicom.spool import Spool
    from node.store.models import Study
    from node.store.states import StudyState
    from node.store.transitions import transition

    database = open_database(settings)
    migrate(database.engine)
    ingestor = Ingestor(database.sessions, Spool(settings.spool_dir))
    ids = []
    for frontal in paths:
        study_ids = set()
        for file in sorted(frontal.parent.glob("*.dcm")):
            header = dcmread(file, stop_before_pixels=True)
            sent = ReceivedInstance(
                header.SOPClassUID,
                header.SOPInstanceUID,
                str(header.file_meta.TransferSyntaxUID),
                file.read_bytes(),
            )
            result = ingestor.store(sent)
            assert result.stored, result.detail
            study_ids.add(result.study_id)
        [study_id] = study_ids
        with database.sessions.begin() as session:
            study = session.get_one(Study, study_id)
            if study.state is StudyState.RECEIVED:
                transition(session, study, StudyState.COMPLETE, "benchmark")
            if study.state is StudyState.COMPLETE:
                transition(session, study, StudyState.QUEUED, "benchmark")
            study.enqueued_at = datetime.now(UTC)
        ids.append(study_id)
    return database, ids


def worker_row(engine: Engine, paths: list[Path], batch: int, gate: bool, scratch: Path) -> tuple[float, int]:
    """Seconds to draft every study through the worker's code, and how many were reported."""
    settings = load_settings(data_dir=Path(tempfile.mkdtemp(dir=scratch)), draft_gate=gate, gpu_batch=batch)
    database, ids = queue_studies(settings, paths)
    facts = model_facts(engine)  # type: ignore[arg-type]
    version: Callable[[object], int] = lambda _: register_model(database.sessions, facts)  # noqa: E731
    inference = StudyInference(
        database.sessions, settings, lambda: engine, version, stale_after=timedelta(seconds=360)
    )  # type: ignore[arg-type]
    run = inference.run if batch == 1 else BatchInference(inference, batch).run
    started = time.perf_counter()
    outcomes = [run(study_id, f"task-{study_id}").outcome for study_id in ids]  # companions: skipped
    seconds = time.perf_counter() - started
    database.dispose()
    from sqlalchemy import func, select

    from node.store.models import Report

    database = open_database(settings)
    with database.sessions() as session:
        reported = session.scalar(select(func.count(Report.id))) or 0
    database.dispose()
    assert outcomes.count("failed") + reported <= len(ids)
    return seconds, int(reported)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=16, help="studies per row (default 16)")
    parser.add_argument("--batches", default="1,4,16", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; a row's figure is its median")
    parser.add_argument("--providers", default="cpu", help="onnxruntime providers (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per session")
    parser.add_argument("--levels", default="engine,worker", help="engine, worker or both")
    parser.add_argument("--model", type=Path, default=bundled_model_dir(), help="exported model directory")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    levels = set(args.levels.split(","))
    if args.n < 1 or args.rounds < 1 or min(batches) < 1 or not levels <= {"engine", "worker"}:
        parser.error("--n, --rounds and batch sizes must be >= 1; --levels engine and/or worker")

    engine = Engine.load(args.model, providers=args.providers, threads=args.threads, max_batch=max(batches))
    print(f"model {engine.manifest.name} {engine.manifest.version} on {engine.providers[0]}, n={args.n}")
    with tempfile.TemporaryDirectory(prefix="echo-batch-bench-") as scratch:
        mixed, one_grid = studies(engine, args.n, Path(scratch) / "synthetic")
        sets = {"one grid": one_grid, "mixed": mixed}
        pixels = {name: [display_pixels(path) for path in paths] for name, paths in sets.items()}
        rows: dict[tuple[str, str, int], list[float]] = {}
        same: dict[tuple[str, int], int] = {}
        reported: dict[tuple[str, int], int] = {}
        stages: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            baseline: dict[str, list[tuple[int, ...]]] = {}
            for batch in batches:
                if "engine" in levels:
                    for name, images in pixels.items():
                        seconds, tokens, split = engine_row(engine, images, batch)
                        rows.setdefault(("engine", name, batch), []).append(seconds)
                        stages.setdefault((name, batch), []).append(split)
                        baseline.setdefault(name, tokens)  # the first batch size listed (1)
                        same[(name, batch)] = sum(a == b for a, b in zip(baseline[name], tokens, strict=True))
                if "worker" in levels:
                    for gate in (True, False):
                        label = "gate on" if gate else "gate off"
                        seconds, count = worker_row(engine, one_grid, batch, gate, Path(scratch))
                        rows.setdefault(("worker", label, batch), []).append(seconds)
                        reported[(label, batch)] = count

    print(
        f"\n{'level':<8}{'images / gate':<15}{'batch':>6}{'studies/s':>11}{'s/study':>9}{'x batch 1':>11}  notes"
    )
    for (level, name, batch), times in sorted(
        rows.items(), key=lambda item: (item[0][0], -len(item[0][1]), item[0][2])
    ):
        seconds = statistics.median(times)
        first = statistics.median(rows[(level, name, batches[0])])
        if level == "engine":
            split = {
                stage: statistics.median(each[stage] for each in stages[(name, batch)]) / args.n
                for stage in ("vision", "decode")
            }
            note = (
                f"same tokens as batch {batches[0]}: {same[(name, batch)]}/{args.n}; s/study in vision "
                f"{split['vision']:.3f}, prefill+decode {split['decode']:.3f}"
            )
        else:
            note = f"{reported[(name, batch)]}/{args.n} reported"
        print(
            f"{level:<8}{name:<15}{batch:>6}{args.n / seconds:>11.2f}{seconds / args.n:>9.3f}"
            f"{first / seconds:>10.2f}x  {note}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
