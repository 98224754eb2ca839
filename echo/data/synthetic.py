"""Generate a synthetic benchmark: N studies of DICOM files plus `manifest.jsonl`.

A study depends only on (seed, index, size, site), so studies are generated in parallel worker
processes in any order and the result is identical for any number of workers. The manifest is
written last and atomically: a folder with a manifest is a complete data set. With a `site`
(`echo.data.site`), studies are drawn as that site would send them: its detector look, case mix and
report style; without one, exactly as before sites existed (the bundled model's data).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo.data.case import Case, sample_case
from echo.data.dicom_writer import ImageRole, build_dataset, write_dataset
from echo.data.identifiers import make_identifiers
from echo.data.lateral import draw_lateral
from echo.data.manifest import MANIFEST_NAME, ManifestRow, assign_split, write_manifest
from echo.data.phantom import draw_frontal
from echo.data.reports import write_report
from echo.data.site import SiteProfile, burn_in, collimate, overlay_texts, site_profile, stream_seed
from echo.data.site_reports import write_site_report
from echo.data.streams import component_rng
from echo.report import format_report

MIN_SIZE = 64
MAX_SIZE = 4096
STUDIES_DIR = "studies"


def study_id(seed: int, index: int, site: str | None = None) -> str:
    return f"syn{seed}-{index:06d}" if site is None else f"{site}-{seed}-{index:06d}"


def study_case(seed: int, index: int, site: str | None = None) -> Case:
    """The ground truth of one study, without drawing it (cheap: used to pick examples)."""
    if site is None:
        return sample_case(component_rng(seed, index, "case"))
    mix = site_profile(site).prevalence
    return sample_case(component_rng(stream_seed(seed, site), index, "case"), mix.icu, mix.scale)


def _site_look(
    profile: SiteProfile, pixels: np.ndarray, rng: np.random.Generator, texts: list[str]
) -> np.ndarray:
    pixels = collimate(pixels, rng, profile.look)
    return burn_in(pixels, texts, rng) if texts else pixels


def generate_study(
    seed: int,
    index: int,
    out_dir: str | Path,
    size: int = 512,
    *,
    case: Case | None = None,
    site: str | None = None,
) -> ManifestRow:
    """Draw, encode and write one study under out_dir/studies/<id>/; return its manifest row.

    `case` replaces the study's sampled ground truth (tests use it to write chosen acquisitions);
    `site` draws the study as that site would send it (`echo.data.site`).
    """
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be {MIN_SIZE}-{MAX_SIZE} pixels, got {size}")
    out_dir = Path(out_dir)
    profile = None if site is None else site_profile(site)
    streams = stream_seed(seed, site)
    if case is None:
        case = study_case(seed, index, site)
    ids = make_identifiers(
        streams, index, case.body.sex, case.body.age, component_rng(streams, index, "identifiers")
    )
    report_rng = component_rng(streams, index, "report")
    text = (
        write_report(case, report_rng)
        if profile is None
        else write_site_report(case, report_rng, profile.style)
    )
    name = study_id(seed, index, site)
    folder = Path(STUDIES_DIR) / name

    look = None if profile is None else profile.look
    frontal = draw_frontal(case, size, streams, index, look).pixels
    roles = [(ImageRole(case.acquisition.view, 1, ids.sop_instance_uids[0]), frontal)]
    if case.acquisition.lateral:
        lateral = draw_lateral(case, size, streams, index, look)
        roles.append((ImageRole("LL", 2, ids.sop_instance_uids[1]), lateral))
    texts: list[str] = []
    if profile is not None:
        overlay = component_rng(streams, index, "site:overlay")
        if overlay.random() < profile.look.overlay_rate:
            texts = overlay_texts(overlay, case.acquisition.view, ids.study_date, ids.study_time)
        roles = [
            (role, _site_look(profile, pixels, component_rng(streams, index, f"site:{role.view}"), texts))
            for role, pixels in roles
        ]
    images = []
    for role, pixels in roles:
        encode = component_rng(streams, index, f"encode:{role.view}")
        if profile is None:
            dataset = build_dataset(pixels, case, ids, role, encode)
        else:
            dataset = build_dataset(
                pixels, case, ids, role, encode, burned_in=bool(texts), institution=profile.institution
            )
        relative = folder / ("frontal.dcm" if role.instance_number == 1 else "lateral.dcm")
        write_dataset(dataset, out_dir / relative)
        images.append(relative.as_posix())

    return ManifestRow(
        id=name,
        split=assign_split(seed, index),
        images=tuple(images),
        frontal=images[0],
        labels=case.labels,
        attributes=case.attributes,
        findings=text.findings,
        impression=text.impression,
        report=format_report(text.findings, text.impression),
        study_instance_uid=ids.study_instance_uid,
        accession_number=ids.accession_number,
        view_position=case.acquisition.view,
        site=site,
    )


@dataclass(frozen=True)
class _Job:
    seed: int
    out_dir: str
    size: int
    site: str | None = None

    def __call__(self, index: int) -> ManifestRow:
        try:
            return generate_study(self.seed, index, self.out_dir, self.size, site=self.site)
        except OSError:
            raise  # disk full, permissions: the message already says what and where
        except Exception as error:  # a generator bug: name the study so it can be reproduced alone
            of = f"seed {self.seed}" if self.site is None else f"seed {self.seed}, site {self.site}"
            raise RuntimeError(f"generating study {index} of {of} failed: {error!r}") from error


def iter_studies(
    n: int, seed: int, out_dir: str | Path, size: int = 512, workers: int = 1, site: str | None = None
) -> Iterator[ManifestRow]:
    """Rows in index order as studies are written; `workers` > 1 uses a process pool."""
    job = _Job(seed, str(out_dir), size, site)
    if workers <= 1:
        yield from map(job, range(n))
        return
    context = multiprocessing.get_context("spawn")  # no fork of a parent holding threads or a terminal
    with context.Pool(workers) as pool:
        yield from pool.imap(job, range(n), chunksize=max(1, min(16, n // (workers * 8) or 1)))


def generate_dataset(
    n: int,
    seed: int,
    out_dir: str | Path,
    size: int = 512,
    workers: int = 1,
    on_study: Callable[[ManifestRow], None] | None = None,
    site: str | None = None,
) -> Path:
    """Write n studies and the manifest; returns the manifest's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in iter_studies(n, seed, out_dir, size, workers, site):
        rows.append(row)
        if on_study is not None:
            on_study(row)
    return write_manifest(out_dir / MANIFEST_NAME, rows)
