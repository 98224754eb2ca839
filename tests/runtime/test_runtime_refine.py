"""Confidence-gated refinement on onnxruntime: the same tokens, forwards and confidences as the
torch decoder (echo.decoding.decode_refine), chosen by the call or by the model's manifest."""

from __future__ import annotations

import json

import pytest

from echo.decodings import DEFAULT_REFINE_THRESHOLD
from echo.errors import UserError
from echo.runtime import DecodeOptions, Engine
from echo.runtime.manifest import ModelManifest
from echo.runtime.result import GeneratedReport

THRESHOLDS = (0.0, 0.2, 0.25, 0.5, 1.0)


def test_refine_tokens_forwards_and_confidences_equal_torch(tiny) -> None:
    seen_steps: set[int] = set()
    for image in tiny.preprocessed(tiny.images(seed=3)):
        for threshold in THRESHOLDS:
            want = tiny.torch_decode([image], "refine", threshold=threshold)
            got = tiny.engine.decode_processed([image], DecodeOptions(decode="refine", threshold=threshold))
            assert got.tokens == want.tokens, threshold
            assert got.forwards == want.forwards, threshold
            assert got.steps_per_block == want.steps_per_block, threshold
            assert got.confidences[0] == pytest.approx(want.confidences[0], abs=1e-4)
            seen_steps |= set(got.steps_per_block[0])
    assert seen_steps == {1, 2}  # both paths ran: blocks kept after one forward, blocks refined


def test_refine_costs_one_or_two_forwards_per_block(tiny) -> None:
    image = tiny.preprocessed(tiny.images(seed=4))[:1]
    blocks = 24 // tiny.engine.manifest.generation.block_size
    onestep = tiny.engine.decode_processed(image, DecodeOptions(decode="onestep"))
    at_zero = tiny.engine.decode_processed(image, DecodeOptions(decode="refine", threshold=0.0))
    assert at_zero.tokens == onestep.tokens and at_zero.forwards == onestep.forwards == blocks
    every = tiny.engine.decode_processed(image, DecodeOptions(decode="refine", threshold=1.0))
    assert every.forwards == 2 * blocks and every.steps_per_block == [[2] * blocks]
    assert every.confidences != onestep.confidences  # unsure positions came from the second forward


def test_a_refined_batch_equals_torch_batched(tiny) -> None:
    images = tiny.preprocessed(tiny.images(seed=5, shapes=((200, 180), (210, 190), (190, 170))))
    got = tiny.engine.decode_processed(images, DecodeOptions(decode="refine", threshold=0.25))
    assert got.tokens == tiny.torch_tokens(images, "refine", threshold=0.25)


@pytest.mark.parametrize("decode", ["onestep", "multistep", "ar"])
def test_every_decoding_reports_torch_confidences(tiny, decode: str) -> None:
    image = tiny.preprocessed(tiny.images(seed=6))[:1]
    want = tiny.torch_decode(image, decode)
    got = tiny.engine.decode_processed(image, DecodeOptions(decode=decode))
    assert [len(row) for row in got.confidences] == [len(row) for row in got.tokens]
    assert got.confidences[0] == pytest.approx(want.confidences[0], abs=1e-4)
    assert all(0.0 < c <= 1.0 for c in got.confidences[0])


def test_the_manifest_can_serve_refine_with_its_threshold(tiny, tmp_path) -> None:
    variant = tiny.manifest_variant(
        tiny.export, tmp_path / "refine", generation={"decode": "refine", "refine_threshold": 0.25}
    )
    engine = Engine.load(variant, warm_up=False)
    image = tiny.images(seed=7)[0]
    report = engine.generate(image, max_new_tokens=24)
    assert (report.decode, report.threshold, report.steps) == ("refine", 0.25, None)
    assert report.decoding == "refine tau=0.25"
    image_in = tiny.preprocessed([image])
    want = tiny.engine.decode_processed(
        image_in, DecodeOptions(decode="refine", threshold=0.25, max_new_tokens=24)
    )
    assert list(report.token_ids) == want.tokens[0]
    assert report.confidences == pytest.approx(want.confidences[0])
    assert report.mean_confidence == pytest.approx(sum(want.confidences[0]) / len(want.confidences[0]))


def test_a_redecode_says_which_decoding_wrote_the_draft(tiny) -> None:
    """The draft gate's call: the same image, more steps per block; the report says so."""
    image = tiny.images(seed=8)[0]
    served = tiny.engine.generate(image, max_new_tokens=16)
    again = tiny.engine.generate(image, max_new_tokens=16, decode="multistep", steps=8)
    assert (served.decode, served.decoding) == ("onestep", "onestep")
    assert (again.decode, again.steps, again.threshold) == ("multistep", 8, 0.85)
    assert again.decoding == "multistep steps=8 tau=0.85"
    assert again.forwards > served.forwards


def test_manifests_without_a_refine_threshold_take_the_default(tiny, tmp_path) -> None:
    assert tiny.engine.manifest.generation.refine_threshold == DEFAULT_REFINE_THRESHOLD  # exported
    older = json.loads((tiny.export / "manifest.json").read_text())
    del older["generation"]["refine_threshold"]
    assert ModelManifest.from_dict(older, "old").generation.refine_threshold == DEFAULT_REFINE_THRESHOLD
    assert GeneratedReport("", "", "", 0, (), 0, 0.0).mean_confidence is None


def test_bad_refine_thresholds_are_refused(tiny, tmp_path) -> None:
    with pytest.raises(UserError, match=r"threshold must be within \[0, 1\], got 1.5"):
        tiny.engine.generate(tiny.images(seed=9)[0], decode="refine", threshold=1.5)
    variant = tiny.manifest_variant(tiny.export, tmp_path / "bad", generation={"refine_threshold": -0.1})
    with pytest.raises(UserError, match=r"refine_threshold -0.1 is outside \[0, 1\]"):
        Engine.load(variant, verify=False, warm_up=False)
