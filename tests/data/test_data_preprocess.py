from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from echo.data.case import sample_case
from echo.data.manifest import ManifestRow
from echo.data.phantom import draw_frontal
from echo.data.preprocess import (
    ImageReadError,
    PreprocessConfig,
    PreprocessConfigError,
    load_pixels,
    model_input,
    preprocess,
    preprocess_dicom,
    smart_resize,
    to_uint8,
)
from echo.data.streams import component_rng

DEMO = PreprocessConfig(min_pixels=56 * 56, max_pixels=224 * 224)


@pytest.fixture(scope="module")
def hf_processor_class():
    """transformers' own Qwen2-VL image processor (PIL backend), imported lazily: it takes seconds."""
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl

    return image_processing_pil_qwen2_vl


def _hf(module, pixels: np.ndarray, config: PreprocessConfig):
    processor = module.Qwen2VLImageProcessorPil(
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        patch_size=config.patch_size,
        merge_size=config.merge_size,
        temporal_patch_size=config.temporal_patch_size,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )
    rgb = np.repeat(to_uint8(pixels)[..., None], 3, axis=-1)
    return processor(images=rgb, return_tensors="np")


@pytest.mark.parametrize(
    ("height", "width", "config"),
    [
        (512, 472, DEMO),  # a synthetic radiograph's shape, scaled down to the demo budget
        (90, 61, DEMO),  # too small: scaled up to min_pixels
        (700, 560, PreprocessConfig(min_pixels=3136, max_pixels=1003520)),  # Qwen2.5-VL defaults
        (333, 333, PreprocessConfig(min_pixels=3136, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2)),
        (256, 200, PreprocessConfig(min_pixels=32 * 32, max_pixels=128 * 128, patch_size=16, merge_size=2)),
    ],
)
def test_matches_transformers_qwen2vl_image_processor(
    hf_processor_class, height: int, width: int, config
) -> None:
    rng = np.random.default_rng(height * width)
    pixels = rng.random((height, width), dtype=np.float32)
    ours = preprocess(pixels, config)
    reference = _hf(hf_processor_class, pixels, config)
    assert ours.grid_thw == tuple(int(v) for v in reference["image_grid_thw"][0])
    assert ours.pixel_values.dtype == np.float32
    assert ours.pixel_values.shape == reference["pixel_values"].shape
    np.testing.assert_allclose(ours.pixel_values, reference["pixel_values"], atol=1e-4, rtol=0)


def test_matches_transformers_on_a_synthetic_radiograph(hf_processor_class) -> None:
    case = sample_case(component_rng(0, 1, "case"))
    pixels = draw_frontal(case, 256, 0, 1).pixels
    np.testing.assert_allclose(
        preprocess(pixels, DEMO).pixel_values,
        _hf(hf_processor_class, pixels, DEMO)["pixel_values"],
        atol=1e-4,
        rtol=0,
    )


def test_smart_resize_agrees_with_transformers(hf_processor_class) -> None:
    for height in (28, 57, 100, 224, 513, 1024, 3000):
        for width in (28, 60, 224, 450, 2500):
            for low, high in ((56 * 56, 224 * 224), (3136, 1003520)):
                assert smart_resize(height, width, 28, low, high) == hf_processor_class.smart_resize(
                    height, width, factor=28, min_pixels=low, max_pixels=high
                )


def test_grid_and_token_counts_agree_with_the_pixel_values() -> None:
    pixels = np.zeros((512, 470), np.float32)
    out = preprocess(pixels, DEMO)
    t, h, w = out.grid_thw
    assert out.pixel_values.shape == (t * h * w, 3 * 2 * 14 * 14)
    assert DEMO.grid_thw(512, 470) == out.grid_thw
    assert DEMO.num_image_tokens(512, 470) == t * h * w // 4
    assert h * 14 * w * 14 <= DEMO.max_pixels and (h * 14) % 28 == 0 and (w * 14) % 28 == 0


def test_patch_rows_keep_each_merge_group_together() -> None:
    """A bright top-left 28x28 block lands in the first four rows (one 2x2 merge group), nowhere else."""
    pixels = np.zeros((56, 56), np.float32)
    pixels[:28, :28] = 1.0
    values = preprocess(pixels, PreprocessConfig(min_pixels=56 * 56, max_pixels=56 * 56)).pixel_values
    bright = values[:, 0] > 0
    assert bright.tolist() == [True] * 4 + [False] * 12


def test_config_round_trips_through_json() -> None:
    config = PreprocessConfig(min_pixels=1024, max_pixels=50176, patch_size=16, image_mean=(0.5, 0.5, 0.5))
    restored = PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert config.to_dict()["image_std"] == list(config.image_std)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"min_pixels": 5000, "max_pixels": 4000},
            r"min_pixels \(5000\) must not exceed max_pixels \(4000\)",
        ),
        (
            {"min_pixels": 100, "max_pixels": 500},
            r"max_pixels \(500\) must hold at least one 28x28 merged patch",
        ),
        (
            {"min_pixels": 100, "max_pixels": 5000, "patch_size": 0},
            "patch_size must be a positive integer, got 0",
        ),
        ({"min_pixels": 100.5, "max_pixels": 5000}, "min_pixels must be a positive integer, got 100.5"),
        (
            {"min_pixels": 100, "max_pixels": 5000, "image_mean": (0.5, 0.5)},
            "image_mean must be three numbers",
        ),
        ({"min_pixels": 100, "max_pixels": 5000, "image_std": (0.5, 0.0, 0.5)}, "image_std must be positive"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(PreprocessConfigError, match=message):
        PreprocessConfig(**kwargs)


def test_from_dict_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(PreprocessConfigError, match="unknown preprocessing config field\\(s\\): resolution"):
        PreprocessConfig.from_dict({"min_pixels": 1, "max_pixels": 50176, "resolution": 224})
    with pytest.raises(PreprocessConfigError, match="preprocessing config is missing max_pixels"):
        PreprocessConfig.from_dict({"min_pixels": 1})
    with pytest.raises(PreprocessConfigError, match="must be a JSON object, got list"):
        PreprocessConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_preprocess_rejects_bad_arrays() -> None:
    with pytest.raises(
        ValueError, match=r"pixels must be a 2-D \(height, width\) array, got shape \(4, 4, 3\)"
    ):
        preprocess(np.zeros((4, 4, 3), np.float32), DEMO)
    with pytest.raises(
        ValueError, match=r"pixels must be floating point in \[0, 1\] \(see load_pixels\), got uint8"
    ):
        preprocess(np.zeros((30, 30), np.uint8), DEMO)
    with pytest.raises(ValueError, match="NaN or infinite"):
        preprocess(np.full((30, 30), np.nan, np.float32), DEMO)
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        preprocess(np.zeros((1, 300), np.float32), DEMO)


# --- load_pixels -------------------------------------------------------------------------------


def _dataset(stored: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **attributes) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    return ds


RAMP = np.array([[50, 75, 100, 125, 150, 4095]], dtype=np.uint16)


def test_monochrome1_is_inverted() -> None:
    upright = load_pixels(_dataset(RAMP, "MONOCHROME2"))
    inverted = load_pixels(_dataset(RAMP, "MONOCHROME1"))
    np.testing.assert_allclose(inverted, 1.0 - upright, atol=1e-7)
    assert upright[0, 0] == 0.0 and upright[0, -1] == 1.0  # no VOI: the value range is stretched


def test_window_center_width_is_applied() -> None:
    pixels = load_pixels(_dataset(RAMP, WindowCenter=100, WindowWidth=50))
    # LINEAR (PS3.3 C.11.2.1.2): below c-0.5-(w-1)/2 -> 0, above c-0.5+(w-1)/2 -> 1, linear between
    expected = np.clip((RAMP - 99.5) / 49 + 0.5, 0, 1)
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_rescale_is_applied_before_the_window() -> None:
    ds = _dataset(RAMP, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=100, WindowWidth=101)
    modality = RAMP * 2.0 - 100
    expected = np.clip((modality - 99.5) / 100 + 0.5, 0, 1)
    np.testing.assert_allclose(load_pixels(ds), expected, atol=1e-6)


def test_voi_lut_sequence_is_applied_and_preferred_over_the_window() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 100, 8]
    item.LUTData = [0, 100, 200, 250]
    ds = _dataset(np.array([[90, 100, 101, 102, 103, 500]], np.uint16), WindowCenter=2000, WindowWidth=10)
    ds.VOILUTSequence = [item]
    expected = np.array([[0, 0, 100, 200, 250, 250]]) / 250
    np.testing.assert_allclose(load_pixels(ds), expected, atol=1e-6)


def test_compressed_transfer_syntaxes_decode(tmp_path: Path) -> None:
    stored = (np.arange(64 * 48).reshape(64, 48) % 4096).astype(np.uint16)
    plain = load_pixels(_dataset(stored))
    for syntax in (JPEG2000Lossless, RLELossless):
        ds = _dataset(stored)
        ds.compress(syntax, stored)
        path = tmp_path / f"{syntax.name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        np.testing.assert_array_equal(load_pixels(path), plain)


def test_png_and_jpeg_are_read_as_grey_in_unit_range(tmp_path: Path) -> None:
    grey8 = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))
    Image.fromarray(grey8).save(tmp_path / "grey.png")
    np.testing.assert_allclose(load_pixels(tmp_path / "grey.png"), grey8 / 255, atol=1e-7)
    grey16 = grey8.astype(np.uint16) * 257
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    np.testing.assert_allclose(load_pixels(tmp_path / "grey16.png"), grey16 / 65535, atol=1e-6)
    Image.fromarray(np.stack([grey8] * 3, axis=-1)).save(tmp_path / "rgb.jpg", quality=95)
    jpeg = load_pixels(tmp_path / "rgb.jpg")
    assert jpeg.shape == grey8.shape and np.abs(jpeg - grey8 / 255).max() < 0.05


def test_read_errors_name_the_file_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="missing.dcm: no such image file"):
        load_pixels(tmp_path / "missing.dcm")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.txt: not a DICOM, PNG or JPEG image"):
        load_pixels(tmp_path / "notes.txt")
    no_pixels = _dataset(RAMP)
    del no_pixels.PixelData
    with pytest.raises(ImageReadError, match="has no pixel data"):
        load_pixels(no_pixels)
    truncated = _dataset(RAMP)
    truncated.PixelData = truncated.PixelData[:4]
    with pytest.raises(ImageReadError, match="cannot decode pixel data"):
        load_pixels(truncated)
    palette = _dataset(RAMP, "PALETTE COLOR")
    with pytest.raises(ImageReadError, match="unsupported photometric interpretation PALETTE COLOR"):
        load_pixels(palette)
    (tmp_path / "text.dcm").write_text("a report pasted into a .dcm file")
    with pytest.raises(ImageReadError, match="text.dcm: not a readable DICOM file"):
        load_pixels(tmp_path / "text.dcm")
    whole = tmp_path / "whole.dcm"
    _dataset(RAMP).save_as(whole, enforce_file_format=True)
    (tmp_path / "cut.dcm").write_bytes(whole.read_bytes()[:300])  # transfer interrupted mid-header
    with pytest.raises(ImageReadError, match="cut.dcm: DICOM object has no pixel data"):
        load_pixels(tmp_path / "cut.dcm")


def test_preprocess_dicom_reads_a_generated_study(
    synthetic_dir: Path, synthetic_rows: list[ManifestRow]
) -> None:
    row = synthetic_rows[0]
    from_path = preprocess_dicom(row.image_path(synthetic_dir), DEMO)
    from_dataset = preprocess_dicom(pydicom.dcmread(row.image_path(synthetic_dir)), DEMO)
    np.testing.assert_array_equal(from_path.pixel_values, from_dataset.pixel_values)
    height, width = pydicom.dcmread(row.image_path(synthetic_dir)).pixel_array.shape
    assert from_path.grid_thw == DEMO.grid_thw(height, width)


def test_the_engine_reads_a_study_as_training_fed_it_to_the_model(
    synthetic_dir: Path, synthetic_rows: list[ManifestRow]
) -> None:
    """With the bundled models' pinned area the size rule is not idempotent: training's cached image
    (resized once) is resized again by `preprocess`. `model_input`, what the engine runs on a raw
    image, gives exactly the training batch's pixels, on a grid `preprocess` alone would not give."""
    from echo.training.examples import load_examples

    pinned = PreprocessConfig(min_pixels=224 * 224, max_pixels=224 * 224)
    examples = load_examples(synthetic_dir / "manifest.jsonl", None, pinned)
    moved = 0
    for row, cached in zip(synthetic_rows, examples.images, strict=True):
        raw = load_pixels(row.image_path(synthetic_dir))
        trained = preprocess(cached.astype(np.float32) / 255.0, pinned)  # echo.training.batches
        served = model_input(raw, pinned)
        assert served.grid_thw == trained.grid_thw, row.id
        np.testing.assert_array_equal(served.pixel_values, trained.pixel_values)
        moved += preprocess(raw, pinned).grid_thw != trained.grid_thw
    assert moved > 0, "no non-square study among the fixture's: the test would show nothing"
