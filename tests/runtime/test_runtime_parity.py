"""The engine writes the same tokens as the torch decoders (echo.decoding) on the same inputs."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from echo.runtime import DecodeOptions, Engine

MODES = ("onestep", "multistep", "ar")


@pytest.mark.parametrize("decode", MODES)
def test_engine_tokens_equal_torch_tokens_on_several_images(tiny, decode: str) -> None:
    for image in tiny.preprocessed(tiny.images(seed=3)):
        want = tiny.torch_decode([image], decode)
        got = tiny.engine.decode_processed([image], DecodeOptions(decode=decode))
        assert got.tokens == want.tokens
        assert got.forwards == want.forwards
        assert got.steps_per_block == want.steps_per_block


def test_onestep_costs_one_forward_per_block(tiny) -> None:
    image = tiny.preprocessed(tiny.images(seed=4))[0]
    out = tiny.engine.decode_processed([image], DecodeOptions(decode="onestep", max_new_tokens=24))
    assert len(out.tokens[0]) == 24  # this random model never writes eos
    assert out.forwards == 24 // tiny.engine.manifest.generation.block_size


@pytest.mark.parametrize("decode", MODES)
def test_a_batch_of_one_grid_equals_torch_batched(tiny, decode: str) -> None:
    images = tiny.preprocessed(tiny.images(seed=5, shapes=((200, 180), (210, 190), (190, 170))))
    assert len({image.grid_thw for image in images}) == 1
    got = tiny.engine.decode_processed(images, DecodeOptions(decode=decode))
    assert got.tokens == tiny.torch_tokens(images, decode)


def test_multistep_step_budget_and_threshold_follow_torch(tiny) -> None:
    image = tiny.preprocessed(tiny.images(seed=6))[:1]
    for steps, threshold in ((2, 0.85), (4, 0.0), (8, 1.0)):
        got = tiny.engine.decode_processed(
            image, DecodeOptions(decode="multistep", steps=steps, threshold=threshold)
        )
        want = tiny.torch_decode(image, "multistep", steps_per_block=steps, threshold=threshold)
        assert got.tokens == want.tokens
        assert got.steps_per_block == want.steps_per_block
    low = tiny.engine.decode_processed(image, DecodeOptions(decode="multistep", threshold=0.0))
    assert low.forwards == 3  # tau 0 commits every position at once: one step per block


@pytest.mark.parametrize("remasking", ["sequential", "low_confidence_static"])
def test_other_remasking_strategies_follow_torch(tiny, remasking: str) -> None:
    image = tiny.preprocessed(tiny.images(seed=7))[:1]
    got = tiny.engine.decode_processed(image, DecodeOptions(decode="multistep", steps=4, remasking=remasking))
    want = tiny.torch_decode(image, "multistep", steps_per_block=4, remasking=remasking)
    assert got.tokens == want.tokens


@pytest.mark.parametrize("io_binding", [False, True])  # True: the device cache's keep_rows
def test_rows_that_stop_early_leave_the_batch_as_in_torch(tiny, tmp_path, io_binding) -> None:
    """eos set to a token this random model writes often, in the manifest and in the torch config
    alike: rows of one batch then finish at different blocks (the keep-rows path)."""
    images = tiny.preprocessed(tiny.images(seed=8, shapes=((200, 180), (210, 190), (190, 170), (205, 185))))
    written = tiny.engine.decode_processed(images, DecodeOptions(decode="onestep")).tokens
    frequent = Counter(token for row in written for token in row).most_common(1)[0][0]
    variant = tiny.manifest_variant(tiny.export, tmp_path / "eos", tokens={"eos": frequent})
    engine = Engine.load(variant, warm_up=False, io_binding=io_binding)
    assert (engine.decoder.prefix is not None) is io_binding
    twin = tiny.with_config(tiny.model, eos_token_id=frequent)
    lengths = set()
    for decode in MODES:
        got = engine.decode_processed(images, DecodeOptions(decode=decode))
        assert got.tokens == tiny.torch_tokens(images, decode, model=twin), decode
        lengths |= {len(row) for row in got.tokens}
    assert len(lengths) > 1  # rows did stop at different points


def test_block_causal_prompt_layout_follows_torch(tiny, tmp_path) -> None:
    """Released ECHO checkpoints cut the whole sequence into blocks; the graphs are the same, only
    the masks and block alignment (computed by the engine) change."""
    variant = tiny.manifest_variant(
        tiny.export, tmp_path / "bc", generation={"prompt_attention": "block_causal"}
    )
    engine = Engine.load(variant, warm_up=False)
    twin = tiny.with_config(tiny.model, prompt_attention="block_causal")
    images = tiny.preprocessed(tiny.images(seed=9))
    context_lengths = {
        image.grid_thw[1] * image.grid_thw[2] // 4 + 2 + len(engine.manifest.generation.prompt_ids)
        for image in images
    }
    assert any(length % 8 for length in context_lengths)  # a partial prompt block is completed
    for image in images:
        for decode in ("onestep", "multistep"):
            got = engine.decode_processed([image], DecodeOptions(decode=decode))
            assert got.tokens == tiny.torch_tokens([image], decode, model=twin), decode


def test_io_binding_path_gives_the_same_tokens(tiny) -> None:
    """The GPU code path (IO binding, logits left on the device) run on the CPU provider."""
    bound = Engine.load(tiny.export, io_binding=True, warm_up=False)
    assert bound.decoder.io_binding
    image = tiny.preprocessed(tiny.images(seed=10))[:1]
    for decode in MODES:
        options = DecodeOptions(decode=decode)
        assert (
            bound.decode_processed(image, options).tokens
            == tiny.engine.decode_processed(image, options).tokens
        )


def test_the_device_cache_moves_only_each_forwards_new_inputs(tiny, monkeypatch) -> None:
    """With IO binding the past is bound as OrtValues where the presents were left: per forward
    the host sends the new positions' inputs (plus an 8-byte prefix length after a block step)
    and reads only top_ids and top_probs, however long the cache."""
    engine = Engine.load(tiny.export, io_binding=True, warm_up=False)
    decoder = engine.decoder
    assert decoder.prefix is not None
    seen: list[tuple[int, int, int, int, int]] = []
    run = decoder.run

    def counted(embeds, positions, mask, past, logits_positions):
        assert all(isinstance(value, ort.OrtValue) for value in past)
        before = (decoder.transfers.to_device, decoder.transfers.to_host)
        out = run(embeds, positions, mask, past, logits_positions)
        sent = embeds.astype(np.float32).nbytes + positions.nbytes + mask.nbytes + logits_positions.nbytes
        read = out.top_ids.nbytes + out.top_probs.nbytes
        moved = (decoder.transfers.to_device - before[0], decoder.transfers.to_host - before[1])
        seen.append((moved[0] - sent, moved[1] - read, past[0].shape()[2], read, sent))
        return out

    monkeypatch.setattr(decoder, "run", counted)
    image = tiny.preprocessed(tiny.images(seed=11))[:1]
    for decode in ("ar", "onestep"):
        out = engine.decode_processed(image, DecodeOptions(decode=decode))
        assert out.tokens == tiny.engine.decode_processed(image, DecodeOptions(decode=decode)).tokens
    assert len(seen) > 20 and max(past for _, _, past, _, _ in seen) > 40
    assert {extra_read for _, extra_read, _, _, _ in seen} == {0}
    assert {extra_sent for extra_sent, _, _, _, _ in seen} <= {0, 8}  # 8: the previous step's cut
    ar_steps = [sent for _, _, past, _, sent in seen[1:] if past > 0][:10]
    assert max(ar_steps) - min(ar_steps) < 16  # an AR step sends one position whatever the past


def test_an_export_without_the_prefix_graph_binds_a_host_cache(tmp_path) -> None:
    """Exports made before kv_prefix.onnx (a copy of the bundled student without it stands in for
    one): IO binding then keeps the cache in numpy."""
    bundled = Path(__file__).resolve().parents[2] / "echo" / "assets" / "models" / "student-onnx"
    model = tmp_path / "before-kv-prefix"
    shutil.copytree(bundled, model)
    (model / "kv_prefix.onnx").unlink()
    manifest = json.loads((model / "manifest.json").read_text())
    del manifest["files"]["kv_prefix.onnx"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    bound, plain = Engine.load(model, io_binding=True, warm_up=False), Engine.load(model, warm_up=False)
    assert bound.decoder.io_binding and bound.decoder.prefix is None
    image = np.random.default_rng(12).random((256, 256)).astype(np.float32)
    for decode in MODES:
        assert (
            bound.generate(image, decode=decode).token_ids == plain.generate(image, decode=decode).token_ids
        )
    assert bound.decoder.transfers.to_host > 0
