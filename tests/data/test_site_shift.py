"""`make-synthetic --site`: a site's detector look, case mix and identity (issue 17, section 4)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest

import echo.data.site as site_module
from echo.data.exposure import expose
from echo.data.manifest import read_manifest, row_from_json, write_manifest
from echo.data.site import (
    PRESETS,
    SiteNameError,
    burn_in,
    check_site_name,
    collimate,
    derived_profile,
    expose_site,
    site_profile,
    stream_seed,
)
from echo.data.synthetic import generate_study, study_case

SIZE = 96


def test_presets_and_derived_profiles_are_deterministic_and_differ_by_name() -> None:
    assert site_profile("riverside") is PRESETS["riverside"]
    assert site_profile("northgate") == derived_profile("northgate")  # the same on every call
    profiles = [site_profile(name) for name in ("riverside", "lakeside", "northgate", "st-marys")]
    for part in ("look", "prevalence", "style"):
        values = [getattr(profile, part) for profile in profiles]
        assert len({repr(value) for value in values}) == len(values), part


@pytest.mark.parametrize("name", ["", "Riverside", "9lives", "a b", "x" * 33, "río"])
def test_bad_site_names_are_refused(name: str) -> None:
    with pytest.raises(SiteNameError, match="--site must be"):
        check_site_name(name)


def test_streams_and_identifiers_never_collide_with_the_default_set(tmp_path: Path) -> None:
    assert stream_seed(11, None) == 11
    assert len({stream_seed(11, None), stream_seed(11, "riverside"), stream_seed(11, "lakeside")}) == 3
    default = generate_study(11, 0, tmp_path / "default", SIZE)
    river = generate_study(11, 0, tmp_path / "river", SIZE, site="riverside")
    lake = generate_study(11, 0, tmp_path / "lake", SIZE, site="lakeside")
    assert (default.id, river.id, lake.id) == ("syn11-000000", "riverside-11-000000", "lakeside-11-000000")
    for field in ("study_instance_uid", "accession_number"):
        assert len({getattr(row, field) for row in (default, river, lake)}) == 3, field
    assert default.split == river.split == lake.split  # the split follows (seed, index) alone


def test_a_site_study_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    first = generate_study(11, 3, tmp_path / "a", SIZE, site="riverside")
    second = generate_study(11, 3, tmp_path / "b", SIZE, site="riverside")
    assert first == second
    for image in first.images:
        assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()


def test_manifest_rows_carry_the_site_name(tmp_path: Path) -> None:
    row = generate_study(11, 1, tmp_path, SIZE, site="lakeside")
    assert row.site == "lakeside"
    assert row.to_json()["site"] == "lakeside"
    write_manifest(tmp_path / "manifest.jsonl", [row])
    assert read_manifest(tmp_path / "manifest.jsonl") == [row]
    with pytest.raises(ValueError, match="site must be a site name"):
        row_from_json({**row.to_json(), "site": "Not A Site"})


def _with_overlay_rate(monkeypatch: pytest.MonkeyPatch, rate: float) -> None:
    profile = PRESETS["riverside"]
    look = dataclasses.replace(profile.look, overlay_rate=rate)
    monkeypatch.setitem(site_module.PRESETS, "riverside", dataclasses.replace(profile, look=look))


def test_burned_in_text_is_declared_in_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images with text in the pixels say BurnedInAnnotation YES, the others NO; both occur."""
    rows = [generate_study(11, index, tmp_path / "with", SIZE, site="riverside") for index in range(10)]
    _with_overlay_rate(monkeypatch, 0.0)  # the same studies drawn without any overlay
    for index in range(10):
        generate_study(11, index, tmp_path / "without", SIZE, site="riverside")
    flags = []
    for row in rows:
        for image in row.images:
            dataset = pydicom.dcmread(tmp_path / "with" / image)
            pixels = dataset.pixel_array
            bare_pixels = pydicom.dcmread(tmp_path / "without" / image).pixel_array
            assert dataset.InstitutionName == "RIVERSIDE (SYNTHETIC)"
            assert dataset.BurnedInAnnotation == ("YES" if not np.array_equal(pixels, bare_pixels) else "NO")
            flags.append(dataset.BurnedInAnnotation)
    assert {"YES", "NO"} <= set(flags)


def test_default_images_never_carry_burned_in_text(tmp_path: Path) -> None:
    row = generate_study(11, 0, tmp_path, SIZE)
    assert pydicom.dcmread(tmp_path / row.frontal).BurnedInAnnotation == "NO"


def test_site_case_mix_has_fewer_normals_and_more_effusions_and_edema() -> None:
    def shares(site: str | None) -> dict[str, float]:
        cases = [study_case(5, index, site) for index in range(1500)]
        return {
            "normal": np.mean([case.is_normal for case in cases]),
            "pleural_effusion": np.mean(["pleural_effusion" in case.positives for case in cases]),
            "edema": np.mean(["edema" in case.positives for case in cases]),
            "endotracheal_tube": np.mean(["endotracheal_tube" in case.positives for case in cases]),
        }

    default, river = shares(None), shares("riverside")
    assert river["normal"] < default["normal"] - 0.1
    for finding in ("pleural_effusion", "edema", "endotracheal_tube"):
        assert river[finding] > 1.5 * default[finding], finding


def test_detector_look_changes_tone_noise_and_borders() -> None:
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0.0, 1.9, 128, dtype=np.float32), (128, 1))
    look = PRESETS["riverside"].look
    default = expose(ramp, np.random.default_rng(1))
    site = expose_site(ramp, np.random.default_rng(1), look)
    assert site.dtype == np.float32 and site.min() >= 0.0 and site.max() <= 1.0
    middle = slice(40, 88)
    # the flat curve lifts lung densities (about 0.15-0.35), and the site image is noisier
    assert site[middle, 10:25].mean() > default[middle, 10:25].mean() + 0.08
    assert site[middle].std(axis=0).mean() > 2 * default[middle].std(axis=0).mean()

    always = dataclasses.replace(look, collimation_rate=1.0)
    shuttered = collimate(np.zeros((128, 128), np.float32), rng, always)
    assert shuttered[64, 0] > 0.9 and shuttered[64, 127] > 0.9 and shuttered[64, 64] == 0.0

    marked = burn_in(np.zeros((128, 128), np.float32), ["L", "PORTABLE", "2021-03-04 07:15"], rng)
    assert marked[:30].max() > 0.85 and marked[40:].max() == 0.0  # text in the upper corners only
