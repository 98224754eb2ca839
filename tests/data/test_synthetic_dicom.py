"""Generated studies are real DICOM: read back by pydicom, DCMTK and dciodvfy; encodings are faithful."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    JPEG2000Lossless,
)

from echo.data import synthetic
from echo.data.case import Case, sample_case
from echo.data.dicom_writer import ImageRole, build_dataset, write_dataset
from echo.data.identifiers import make_identifiers
from echo.data.manifest import ManifestRow
from echo.data.phantom import draw_frontal
from echo.data.preprocess import load_pixels
from echo.data.streams import component_rng
from echo.data.synthetic import generate_study

SOP_CLASS = {"CR": ComputedRadiographyImageStorage, "DX": DigitalXRayImageStorageForPresentation}


def _variant(tmp_path: Path, name: str, **acquisition) -> Path:
    """One frontal image of a fixed case written with the given acquisition settings."""
    case = sample_case(component_rng(0, 1, "case"))
    settings = {"rescale": (1.0, 0.0) if acquisition.get("modality") == "DX" else None, **acquisition}
    case = replace(case, acquisition=replace(case.acquisition, **settings))
    display = draw_frontal(case, 96, 0, 1).pixels
    ids = make_identifiers(0, 1, case.body.sex, case.body.age, component_rng(0, 1, "identifiers"))
    dataset = build_dataset(
        display, case, ids, ImageRole("PA", 1, ids.sop_instance_uids[0]), component_rng(0, 1, "encode")
    )
    path = tmp_path / f"{name}.dcm"
    write_dataset(dataset, path)
    return path


def test_every_generated_file_reads_back_with_the_manifest_identifiers(
    synthetic_dir: Path, synthetic_rows: list[ManifestRow]
) -> None:
    for row in synthetic_rows:
        for number, path in enumerate(row.image_paths(synthetic_dir), start=1):
            ds = pydicom.dcmread(path)
            assert ds.SOPClassUID == SOP_CLASS[ds.Modality]
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.StudyInstanceUID == row.study_instance_uid
            assert ds.AccessionNumber == row.accession_number
            assert ds.BodyPartExamined == "CHEST"
            assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
            assert 12 <= ds.BitsStored <= 16 and ds.HighBit == ds.BitsStored - 1
            assert int(ds.pixel_array.max()) < 2**ds.BitsStored
            assert ds.InstanceNumber == number
            assert ds.ViewPosition == (row.view_position if number == 1 else "LL")
            assert ds.PatientID.startswith("SYN") and "phantom" in ds.ImageComments


def test_identifiers_are_unique_across_the_data_set(synthetic_rows: list[ManifestRow]) -> None:
    for field in ("id", "study_instance_uid", "accession_number"):
        values = [getattr(row, field) for row in synthetic_rows]
        assert len(set(values)) == len(values), field


@pytest.mark.integration
def test_dcmdump_reads_uncompressed_and_jpeg2000_files(tmp_path: Path) -> None:
    for name, compressed in (("plain", False), ("j2k", True)):
        path = _variant(tmp_path, name, modality="CR", compressed=compressed, photometric="MONOCHROME1")
        result = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "(0008,0060) CS [CR]" in result.stdout
        assert "(0028,0004) CS [MONOCHROME1]" in result.stdout
        assert ("JPEG 2000" in result.stdout) == compressed
        assert "E:" not in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_dciodvfy_finds_no_errors(tmp_path: Path, modality: str) -> None:
    path = _variant(tmp_path, modality, modality=modality, voi="lut", bits_stored=12, compressed=True)
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def test_jpeg2000_file_decodes_to_the_same_pixels_as_its_uncompressed_twin(tmp_path: Path) -> None:
    plain = pydicom.dcmread(_variant(tmp_path, "plain", modality="DX", compressed=False, bits_stored=16))
    packed = pydicom.dcmread(_variant(tmp_path, "j2k", modality="DX", compressed=True, bits_stored=16))
    assert packed.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert packed.SOPInstanceUID == plain.SOPInstanceUID == packed.file_meta.MediaStorageSOPInstanceUID
    assert len(packed.PixelData) < len(plain.PixelData)
    np.testing.assert_array_equal(packed.pixel_array, plain.pixel_array)
    np.testing.assert_array_equal(load_pixels(packed), load_pixels(plain))


def test_monochrome1_and_monochrome2_encodings_display_the_same(tmp_path: Path) -> None:
    inverted = _variant(tmp_path, "m1", modality="CR", photometric="MONOCHROME1", bits_stored=14)
    upright = _variant(tmp_path, "m2", modality="CR", photometric="MONOCHROME2", bits_stored=14)
    stored_m1, stored_m2 = pydicom.dcmread(inverted).pixel_array, pydicom.dcmread(upright).pixel_array
    np.testing.assert_array_equal(stored_m1.astype(int), 2**14 - 1 - stored_m2.astype(int))
    # equal up to the LINEAR window's half-value offset (PS3.3 C.11.2.1.2), far below one grey level
    np.testing.assert_allclose(load_pixels(inverted), load_pixels(upright), atol=1e-3)


def test_voi_lut_and_window_both_frame_the_body(tmp_path: Path) -> None:
    window = load_pixels(_variant(tmp_path, "window", modality="DX", voi="window", bits_stored=12))
    lut = load_pixels(_variant(tmp_path, "lut", modality="DX", voi="lut", bits_stored=12))
    assert pydicom.dcmread(tmp_path / "lut.dcm").VOILUTSequence[0].LUTDescriptor[0] == 4096
    assert np.corrcoef(window.ravel(), lut.ravel())[0, 1] > 0.97
    for pixels in (window, lut):
        assert pixels.min() < 0.1 and pixels.max() > 0.85


def test_rescaled_cr_window_is_in_modality_units(tmp_path: Path) -> None:
    plain = load_pixels(_variant(tmp_path, "plain", modality="CR", rescale=None, bits_stored=12))
    rescaled_path = _variant(tmp_path, "rescaled", modality="CR", rescale=(0.5, -100.0), bits_stored=12)
    assert float(pydicom.dcmread(rescaled_path).RescaleSlope) == 0.5
    np.testing.assert_allclose(load_pixels(rescaled_path), plain, atol=2e-3)


def test_a_study_is_byte_identical_when_generated_twice(tmp_path: Path) -> None:
    first = generate_study(5, 2, tmp_path / "a", size=96)
    second = generate_study(5, 2, tmp_path / "b", size=96)
    assert first == second
    for image in first.images:
        assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()


def test_generate_study_rejects_a_bad_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size must be 64-4096 pixels, got 10"):
        generate_study(0, 0, tmp_path, size=10)


def _case_with_lateral() -> tuple[int, Case]:
    for index in range(200):
        case = sample_case(component_rng(9, index, "case"))
        if case.acquisition.lateral:
            return index, case
    raise AssertionError("no lateral")


def test_study_with_a_lateral_has_two_instances_in_one_series(tmp_path: Path) -> None:
    index, _ = _case_with_lateral()
    row = generate_study(9, index, tmp_path, size=96)
    frontal, lateral = (pydicom.dcmread(path) for path in row.image_paths(tmp_path))
    assert row.frontal == row.images[0] and len(row.images) == 2
    assert frontal.SeriesInstanceUID == lateral.SeriesInstanceUID
    assert frontal.SOPInstanceUID != lateral.SOPInstanceUID
    assert (frontal.ViewPosition, lateral.ViewPosition) == (row.view_position, "LL")
    assert list(lateral.PatientOrientation) == ["P", "F"]


def test_a_generator_failure_names_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(seed: int, index: int, out_dir: Path, size: int, site: str | None = None) -> ManifestRow:
        raise ValueError("high - low < 0")

    monkeypatch.setattr(synthetic, "generate_study", broken)
    with pytest.raises(
        RuntimeError, match=r"generating study 0 of seed 4 failed: ValueError\('high - low < 0'\)"
    ):
        synthetic.generate_dataset(2, 4, tmp_path, size=96)
    assert not (tmp_path / "manifest.jsonl").exists()  # no manifest for an incomplete data set
