"""Throughput of the batched worker (ECHO_GPU_BATCH): studies per second at batch 1, 4 and 16.

Two levels, on the bundled demo student (onnxruntime; CPU unless --providers says otherwise):

- engine: `Engine.generate_batch` over N distinct synthetic studies' frontal images, N/b calls of b
  images. "one grid" rows use studies whose images share one preprocessed grid; "mixed grids" rows
  the studies as they come, each image cut to one of several aspect ratios (real radiographs come
  in many), so nearly every image has its own grid: the engine decodes them in one pass per call
  (causal prompts: shorter contexts left-padded, echo.runtime.batching); "mixed, by grid" rows
  decode the same images as the engine did before that, one pass per grid in each call. The notes
  count the studies whose batched draft has exactly the tokens of their batch-1 draft, and the
  engine passes per call.
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

from echo.data.preprocess import model_input  # noqa: E402
from echo.data.synthetic import generate_study  # noqa: E402
from echo.runtime import Engine  # noqa: E402
from echo.runtime.images import display_pixels  # noqa: E402
from node.config.settings import Settings, bundled_model_dir, load_settings  # noqa: E402
from node.store.database import migrate, open_database  # noqa: E402
from worker.batch import BatchInference  # noqa: E402
from worker.inference import StudyInference, model_facts, register_model  # noqa: E402

SEED = 2026
# width / height cuts of the "mixed grids" images: portrait and landscape detectors, collimation
ASPECTS = (1.0, 0.8, 0.9, 0.7, 1.25, 0.85, 0.75, 1.1, 0.95, 0.65, 1.2, 0.6)


def cut_to_aspect(pixels: np.ndarray, aspect: float) -> np.ndarray:
    """The centred crop of `pixels` whose width / height is `aspect` (as near as whole pixels go)."""
    height, width = pixels.shape
    if width / height > aspect:
        keep = max(1, round(height * aspect))
        left = (width - keep) // 2
        return pixels[:, left : left + keep]
    keep = max(1, round(width / aspect))
    top = (height - keep) // 2
    return pixels[top : top + keep]


def studies(engine: Engine, n: int, folder: Path) -> tuple[list[Path], list[Path]]:
    """Frontal image paths of n synthetic studies as they come (mixed grids), and of n studies whose
    images share the most common grid; both drawn from one stream of studies (their folders)."""
    by_grid: dict[tuple[int, int, int], list[Path]] = {}
    mixed: list[Path] = []
    index = 0
    while len(mixed) < n or max((len(paths) for paths in by_grid.values()), default=0) < n:
        row = generate_study(SEED, index, folder)
        path = folder / row.frontal
        grid = model_input(display_pixels(path), engine.preprocess_config).grid_thw
        by_grid.setdefault(grid, []).append(path)
        if len(mixed) < n:
            mixed.append(path)
        index += 1
    one_grid = max(by_grid.values(), key=len)[:n]
    return mixed, one_grid


def by_grid_calls(engine: Engine, images: list[np.ndarray]) -> list[list[int]]:
    """The indices of `images` split by preprocessed grid (the engine's grouping before mixed-grid
    passes): one generate_batch call per grid."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, image in enumerate(images):
        grid = model_input(display_pixels(image), engine.preprocess_config).grid_thw
        groups.setdefault(grid, []).append(index)
    return list(groups.values())


def engine_row(
    engine: Engine, images: list[np.ndarray], batch: int, split_by_grid: bool = False
) -> tuple[float, list[tuple[int, ...]], dict[str, float]]:
    """Seconds for every image in calls of `batch` (split_by_grid: each call's images one call per
    grid), each image's tokens, the seconds of each stage (vision tower; prefill + decoding)
    summed over the engine's passes, and the number of passes."""
    started = time.perf_counter()
    tokens: list[tuple[int, ...]] = []
    stages = {"vision": 0.0, "decode": 0.0, "passes": 0.0}
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        calls = by_grid_calls(engine, chunk) if split_by_grid else [list(range(len(chunk)))]
        written: dict[int, tuple[int, ...]] = {}
        for call in calls:
            reports = engine.generate_batch([chunk[i] for i in call])
            written.update((i, report.token_ids) for i, report in zip(call, reports, strict=True))
            # The rows of one engine pass carry that pass's timings: one entry per pass.
            for vision, prefill, decode, _ in {
                (t["vision"], t["prefill"], t["decode"], t["total"]) for t in (r.timings for r in reports)
            }:
                stages["vision"] += vision
                stages["decode"] += prefill + decode
                stages["passes"] += 1
        tokens += [written[i] for i in range(len(chunk))]
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
        cut = [cut_to_aspect(display_pixels(path), ASPECTS[i % len(ASPECTS)]) for i, path in enumerate(mixed)]
        pixels = {"one grid": [display_pixels(path) for path in one_grid], "mixed grids": cut}
        grids = {model_input(image, engine.preprocess_config).grid_thw for image in cut}
        print(f"mixed grids: {len(grids)} grids among {len(cut)} images")
        sets = {name: (images, False) for name, images in pixels.items()}
        sets["mixed, by grid"] = (cut, True)
        rows: dict[tuple[str, str, int], list[float]] = {}
        same: dict[tuple[str, int], int] = {}
        reported: dict[tuple[str, int], int] = {}
        stages: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            baseline: dict[str, list[tuple[int, ...]]] = {}
            for batch in batches:
                if "engine" in levels:
                    for name, (images, split_by_grid) in sets.items():
                        seconds, tokens, split = engine_row(engine, images, batch, split_by_grid)
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
        f"\n{'level':<8}{'images / gate':<16}{'batch':>6}{'studies/s':>11}{'s/study':>9}{'x batch 1':>11}  notes"
    )
    order = [*sets, "gate on", "gate off"]
    for (level, name, batch), times in sorted(
        rows.items(), key=lambda item: (item[0][0], order.index(item[0][1]), item[0][2])
    ):
        seconds = statistics.median(times)
        first = statistics.median(rows[(level, name, batches[0])])
        if level == "engine":
            split = {
                stage: statistics.median(each[stage] for each in stages[(name, batch)]) / args.n
                for stage in ("vision", "decode")
            }
            passes = statistics.median(each["passes"] for each in stages[(name, batch)])
            note = (
                f"same tokens as batch {batches[0]}: {same[(name, batch)]}/{args.n}; s/study in vision "
                f"{split['vision']:.3f}, prefill+decode {split['decode']:.3f}; passes/call "
                f"{passes / -(-args.n // batch):.2f}"
            )
        else:
            note = f"{reported[(name, batch)]}/{args.n} reported"
        print(
            f"{level:<8}{name:<16}{batch:>6}{args.n / seconds:>11.2f}{seconds / args.n:>9.3f}"
            f"{first / seconds:>10.2f}x  {note}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
