"""TensorRT shape profiles cover every call the engine makes (checked here without a GPU)."""

from __future__ import annotations

from echo.runtime import load_manifest
from echo.runtime.manifest import decoder_input_names
from echo.runtime.tensorrt import decoder_profile, max_patches, vision_profile


def test_decoder_profile_spans_prefill_to_the_last_step(tiny) -> None:
    manifest = load_manifest(tiny.export)
    profile = decoder_profile(manifest, max_batch=4)
    names = decoder_input_names(manifest.text.num_layers)
    assert list(profile.minimum) == list(profile.maximum) == names
    assert profile.minimum["past_key_0"] == (1, 2, 0, 16)  # the prefill has no past
    assert profile.minimum["inputs_embeds"] == (1, 1, 64)
    context = max_patches(manifest) // 4 + 2 + len(manifest.generation.prompt_ids)
    assert max_patches(manifest) == 112 * 168 // 14**2
    assert profile.maximum["inputs_embeds"] == (4, context + 16, 64)
    assert profile.maximum["past_value_1"] == (4, 2, context + 24 + 16, 16)
    longest = profile.maximum["attention_mask"]
    assert longest == (4, context + 16, context + 24 + 16 + context + 16)
    options = profile.provider_options()
    assert options["trt_profile_min_shapes"].startswith("inputs_embeds:1x1x64,position_ids:3x1x1,")
    assert "logits_positions:1," in options["trt_profile_min_shapes"]


def test_vision_profile_spans_one_merged_token_to_a_full_batch(tiny) -> None:
    manifest = load_manifest(tiny.export)
    profile = vision_profile(manifest, max_batch=2)
    assert profile.minimum["pixel_values"] == (4, 1176)
    assert profile.maximum["pixel_values"] == (2 * 96, 1176)
    assert profile.maximum["window_index"] == (48,)
    # slot tables: one window of one merged token up to every window partial; frames up to the batch
    assert (profile.minimum["window_slots"], profile.minimum["frame_slots"]) == ((1, 4), (1, 4))
    assert (profile.optimum["window_slots"], profile.optimum["frame_slots"]) == ((6, 16), (1, 96))
    assert (profile.maximum["window_slots"], profile.maximum["frame_slots"]) == ((48, 16), (2, 96))
    assert profile.maximum["window_places"] == profile.maximum["frame_segments"] == (2 * 96,)
    assert profile.provider_options()["trt_profile_opt_shapes"].startswith(
        "pixel_values:96x1176,patch_positions:96x2,"
    )


def test_generate_batch_splits_a_grid_into_max_batch_chunks(tiny) -> None:
    from echo.runtime import Engine

    engine = Engine.load(tiny.export, warm_up=False, max_batch=2)
    images = tiny.images(seed=30, shapes=((200, 180), (210, 190), (190, 170)))
    reports = engine.generate_batch(images)
    assert [r.batch_size for r in reports] == [2, 2, 1]
    assert [r.token_ids for r in reports] == [r.token_ids for r in tiny.engine.generate_batch(images)]
