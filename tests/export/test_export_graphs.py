"""The exported graphs compute what the torch model computes, for any grid, batch and cache length."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from echo.export.parity import DecoderCase, cpu_session, decoder_error, vision_error
from echo.runtime.manifest import decoder_input_names, decoder_output_names, sha256_of
from echo.runtime.masks import causal_mask

FP32_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sessions(tiny_export):
    return cpu_session(tiny_export.export / "vision.onnx"), cpu_session(tiny_export.export / "decoder.onnx")


@pytest.mark.parametrize(
    ("grids", "seed"),
    [
        ([(1, 4, 6)], 101),
        ([(1, 8, 12)], 102),
        ([(1, 6, 10), (1, 4, 4), (1, 2, 2)], 103),
        ([(1, 12, 2)], 104),
        ([(1, 10, 6)], 105),  # non-square, partial windows on both axes
        ([(2, 4, 6), (1, 6, 6)], 106),  # two frames of one image, then a 3 x 3-token image
    ],
)
def test_vision_features_match_torch(tiny_export, sessions, grids, seed) -> None:
    assert vision_error(tiny_export.model, sessions[0], grids, seed) < FP32_TOLERANCE


@pytest.mark.parametrize(
    ("case", "seed"),
    [
        (DecoderCase(batch=1, length=30, past=0), 201),  # a prefill
        (DecoderCase(batch=3, length=16, past=0), 202),
        (DecoderCase(batch=1, length=1, past=40), 203),  # an AR step
        (DecoderCase(batch=2, length=16, past=37), 204),  # a fused one-step block
        (DecoderCase(batch=4, length=8, past=9), 205),
        # logits at some positions only: the last layer runs there alone, the cache still whole
        (DecoderCase(batch=1, length=73, past=0, logits_from=65), 206),  # prefill fused with a block
        (DecoderCase(batch=2, length=16, past=37, logits_from=8), 207),  # a block after its context
        (DecoderCase(batch=1, length=9, past=40, logits_from=8), 208),  # an AR step after a token
    ],
)
def test_decoder_logits_and_cache_match_torch(tiny_export, sessions, case, seed) -> None:
    assert decoder_error(tiny_export.model, sessions[1], case, seed) < FP32_TOLERANCE


def test_decoder_head_is_the_argmax_without_the_mask_token(tiny_export, sessions) -> None:
    config = tiny_export.model.config
    layers = config.num_hidden_layers
    rng = np.random.default_rng(7)
    embeds = rng.standard_normal((2, 6, config.hidden_size)).astype(np.float32)
    empty = np.zeros((2, config.num_key_value_heads, 0, config.head_dim), dtype=np.float32)
    feeds = dict(
        zip(
            decoder_input_names(layers),
            [
                embeds,
                np.broadcast_to(np.arange(6), (3, 2, 6)).copy(),
                np.broadcast_to(causal_mask(6), (2, 6, 6)).copy(),
                np.arange(6),
            ]
            + [empty] * (2 * layers),
            strict=True,
        )
    )
    logits, top_ids, top_probs = sessions[1].run(["logits", "top_ids", "top_probs"], feeds)
    some = sessions[1].run(["logits", "top_ids"], {**feeds, "logits_positions": np.array([5, 2])})
    assert np.allclose(some[0], logits[:, [5, 2]], rtol=1e-5, atol=1e-6)  # the head only where asked
    assert some[1].tolist() == top_ids[:, [5, 2]].tolist()
    logits = logits.astype(np.float64)
    logits[..., config.mask_token_id] = -np.inf
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert top_ids.tolist() == probs.argmax(-1).tolist()
    assert np.allclose(top_probs, probs.max(-1), rtol=1e-5)
    assert top_ids.dtype == np.int64 and top_probs.dtype == np.float32


def test_graphs_pass_the_checker_with_named_dynamic_axes(tiny_export) -> None:
    layers = tiny_export.model.config.num_hidden_layers
    decoder = onnx.load(str(tiny_export.export / "decoder.onnx"))
    onnx.checker.check_model(decoder, full_check=True)
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in decoder.graph.input
    }
    assert [i.name for i in decoder.graph.input] == decoder_input_names(layers)
    assert [o.name for o in decoder.graph.output] == decoder_output_names(layers)
    assert dims["inputs_embeds"] == ["batch", "sequence", 64]
    assert dims["attention_mask"] == ["batch", "sequence", "total_sequence"]
    assert dims["logits_positions"] == ["logits_sequence"]
    assert dims["past_key_0"] == ["batch", 2, "past_sequence", 16]
    out_dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in decoder.graph.output
    }
    assert out_dims["present_value_1"][2] in ("past_sequence + sequence", "sequence + past_sequence")
    assert max(op.version for op in decoder.opset_import if op.domain in ("", "ai.onnx")) == 18
    vision = onnx.load(str(tiny_export.export / "vision.onnx"))
    assert [d.dim_param for d in vision.graph.input[0].type.tensor_type.shape.dim][0] == "patches"


def test_manifest_describes_the_checkpoint(tiny_export) -> None:
    manifest = json.loads((tiny_export.export / "manifest.json").read_text())
    config, tokenizer, spec = tiny_export.model.config, tiny_export.tokenizer, tiny_export.spec
    assert manifest["name"] == "student-checkpoint"
    assert len(manifest["version"]) == 16
    assert manifest["dtype"] == "float32" and manifest["opset"] == 18
    assert manifest["tokens"] == {
        "mask": 2,
        "eos": 1,
        "pad": 0,
        "image": 5,
        "vision_start": 3,
        "vision_end": 4,
    }
    generation = manifest["generation"]
    assert generation["prompt_ids"] == tokenizer.encode(spec.prompt)
    assert (generation["decode"], generation["stage"], generation["block_size"]) == (
        "onestep",
        "dcd",
        config.block_size,
    )
    assert (generation["max_new_tokens"], generation["threshold"]) == (24, 0.85)
    assert manifest["preprocess"]["max_pixels"] == config.preprocess["max_pixels"]
    assert manifest["vision"]["window_patches"] == config.vision.window_size // config.vision.patch_size
    for name, digest in manifest["files"].items():
        assert sha256_of(tiny_export.export / name) == digest
    assert (tiny_export.export / "tokenizer.json").read_bytes() == (
        tiny_export.checkpoint / "tokenizer.json"
    ).read_bytes()
    embeddings = np.load(tiny_export.export / "embeddings.npy")
    assert np.array_equal(embeddings, tiny_export.model.model.embed_tokens.weight.detach().numpy())
    assert manifest["source"]["weights_sha256"]["model.safetensors"] == sha256_of(
        tiny_export.checkpoint / "model.safetensors"
    )


def test_vision_graph_attends_per_window_not_over_all_patches(tiny_export) -> None:
    """No tensor of the vision graph is (patches x patches): windows attend (windows, heads,
    window_length, window_length), full blocks (frames, heads, frame_length, frame_length)."""
    vision = onnx.load(str(tiny_export.export / "vision.onnx"))
    shapes = [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in vision.graph.value_info
    ]
    assert not [shape for shape in shapes if shape.count("patches") > 1]
    assert ["windows", 2, "window_length", 16] in shapes  # q, k, v gathered per window (2 heads)
    assert ["frames", 2, "frame_length", 16] in shapes
    inputs = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in vision.graph.input
    }
    assert inputs["window_slots"] == ["windows", "window_length"]
    assert inputs["frame_slots"] == ["frames", "frame_length"]
    assert inputs["window_places"] == inputs["frame_places"] == ["patches"]
