"""What the engine accepts and returns: images in several forms, reports with counts and timings."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from echo.data.preprocess import preprocess
from echo.errors import UserError
from echo.report import split_report
from echo.runtime import DecodeOptions, Engine


def test_report_fields(tiny) -> None:
    image = tiny.images(seed=20)[0]
    report = tiny.engine.generate(image)
    assert report.model_version == tiny.engine.manifest.version
    assert report.decode == "onestep"
    assert report.tokens == len(report.token_ids) == 24
    assert report.forwards == 3
    assert report.tokens_per_forward == 8.0
    assert report.text == tiny.tokenizer.decode(list(report.token_ids))
    sections = split_report(report.text)
    assert (report.findings, report.impression) == (sections.findings, sections.impression)
    assert set(report.timings) == {"preprocess", "vision", "prefill", "decode", "total"}
    assert all(value >= 0 for value in report.timings.values())
    assert report.seconds == report.timings["total"] >= report.timings["vision"]


def test_uint8_float_png_and_dicom_inputs_give_one_report(tiny, tmp_path) -> None:
    pixels = (tiny.images(seed=21)[0] * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    dataset = _dicom(pixels, tmp_path / "image.dcm")
    reports = [
        tiny.engine.generate(source)
        for source in (
            pixels,
            pixels.astype(np.float32) / 255.0,
            tmp_path / "image.png",
            str(tmp_path / "image.dcm"),
            dataset,
        )
    ]
    assert len({report.token_ids for report in reports}) == 1


def test_generate_batch_keeps_order_across_grids(tiny) -> None:
    images = tiny.images(seed=22, shapes=((200, 180), (90, 120), (210, 190), (256, 300)))
    batch = tiny.engine.generate_batch(images)
    single = [tiny.engine.generate(image) for image in images]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]
    assert [r.batch_size for r in batch] == [4, 4, 4, 4]  # causal prompts: three grids share one pass
    assert tiny.engine.generate_batch([]) == []


def test_generate_takes_overrides(tiny) -> None:
    image = tiny.images(seed=23)[0]
    short = tiny.engine.generate(image, max_new_tokens=5)
    assert short.tokens == 5 and short.forwards == 1
    ar = tiny.engine.generate(image, decode="ar", max_new_tokens=5)
    assert ar.decode == "ar" and ar.forwards == 5
    processed = preprocess(image, tiny.preprocess_config)
    assert list(ar.token_ids) == tiny.torch_tokens([processed], "ar", max_new=5)[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decode": "beam"}, "decode must be one of ar, multistep, onestep, refine, not 'beam'"),
        ({"max_new_tokens": 0}, "max new tokens must be >= 1, got 0"),
        ({"steps": 0}, "steps per block must be >= 1, got 0"),
        ({"threshold": 1.5}, r"threshold must be within \[0, 1\], got 1.5"),
        ({"remasking": "random"}, "unknown remasking strategy 'random'"),
    ],
)
def test_bad_options_are_user_errors(tiny, options, message) -> None:
    image = tiny.images(seed=24)[0]
    decode = options.pop("decode", "multistep")
    with pytest.raises(UserError, match=message):
        tiny.engine.generate(image, decode=decode, **options)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 3), dtype=np.uint8), r"must be 2-D \(height, width\), got shape \(4, 4, 3\)"),
        (np.full((64, 64), 2.0, dtype=np.float32), r"finite values in \[0, 1\]"),
        (np.zeros((64, 64), dtype=np.int32), "must be uint8 or float in"),
        (42, "cannot read an image from a int"),
    ],
)
def test_bad_images_are_user_errors(tiny, image, message) -> None:
    with pytest.raises(UserError, match=message):
        tiny.engine.generate(image)


def test_an_unreadable_file_is_a_user_error(tiny, tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="broken.png: not a DICOM, PNG or JPEG image"):
        tiny.engine.generate(tmp_path / "broken.png")
    with pytest.raises(UserError, match="missing.dcm: no such image file"):
        tiny.engine.generate(tmp_path / "missing.dcm")


def test_an_ar_only_model_refuses_diffusion(tiny, tmp_path) -> None:
    variant = tiny.manifest_variant(
        tiny.export, tmp_path / "ar", tokens={"mask": None}, generation={"decode": "ar"}
    )
    engine = Engine.load(variant, warm_up=False)
    assert engine.generate(tiny.images(seed=25)[0], max_new_tokens=3).tokens == 3
    with pytest.raises(UserError, match="has no mask token, so it can decode only 'ar', not 'onestep'"):
        engine.decode_processed(tiny.preprocessed(tiny.images(seed=25))[:1], DecodeOptions(decode="onestep"))


def test_engine_records_its_start_time_and_providers(tiny) -> None:
    engine = Engine.load(tiny.export, threads=1)
    assert engine.start_seconds > 0
    assert engine.providers == ["CPUExecutionProvider"]
    assert engine.version == tiny.engine.version
    with pytest.raises(UserError, match="threads must be >= 0, got -1"):
        Engine.load(tiny.export, threads=-1)


def _dicom(pixels: np.ndarray, path) -> pydicom.Dataset:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def test_a_prepared_image_is_read_once_and_its_vision_features_reused(tiny, monkeypatch) -> None:
    """Engine.prepare: the draft gate decodes one image up to three ways; the later decodes skip the
    reading, the preprocessing and the vision graph and write what a fresh decode writes."""
    image = tiny.images(seed=21)[0]
    fresh = [tiny.engine.generate(image, decode=decode) for decode in ("onestep", "multistep", "ar")]
    vision_runs = []
    run = tiny.engine.vision.run
    monkeypatch.setattr(tiny.engine.vision, "run", lambda *args: vision_runs.append(1) or run(*args))
    prepared = tiny.engine.prepare(image)
    again = [tiny.engine.generate(prepared, decode=decode) for decode in ("onestep", "multistep", "ar")]
    assert [r.token_ids for r in again] == [r.token_ids for r in fresh]
    assert len(vision_runs) == 1
    assert again[0].timings["preprocess"] > 0 and again[1].timings["preprocess"] == 0.0
    assert prepared.context is not None and not prepared.context.embeds.flags.writeable
    batch = tiny.engine.generate_batch([prepared, image], options=DecodeOptions(decode="onestep"))
    assert batch[0].token_ids == fresh[0].token_ids
