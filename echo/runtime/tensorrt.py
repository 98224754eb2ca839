"""TensorRT optimization profiles for the two graphs, from the manifest's limits.

Without explicit profiles onnxruntime's TensorRT provider rebuilds an engine whenever an input
shape leaves the range it has seen, and a KV cache grows on every step. The ranges here cover
every call the engine makes, up to `max_batch` studies at once: the largest image the
preprocessing allows, the longest context, the whole response.
"""

from __future__ import annotations

from dataclasses import dataclass

from echo.runtime.manifest import DENSE_VISION_INPUTS, VISION_INPUTS, ModelManifest, decoder_input_names

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Profile:
    minimum: Shapes
    optimum: Shapes
    maximum: Shapes

    def provider_options(self) -> dict[str, str]:
        return {
            "trt_profile_min_shapes": _format(self.minimum),
            "trt_profile_opt_shapes": _format(self.optimum),
            "trt_profile_max_shapes": _format(self.maximum),
        }


def vision_profile(manifest: ModelManifest, max_batch: int) -> Profile:
    """Both graph layouts' inputs (slot tables, and the dense segments of older exports)."""
    unit = manifest.vision.merge_size**2
    largest = max_patches(manifest)
    window = (manifest.vision.window_patches // manifest.vision.merge_size) ** 2 * unit  # patches

    def shapes(patches: int, frames: int) -> Shapes:
        tokens = patches // unit
        longest_window = min(window, patches)
        sizes = {
            "pixel_values": (patches, manifest.vision.patch_dim),
            "patch_positions": (patches, 2),
            "window_index": (tokens,),
            "restore_index": (tokens,),
            "window_slots": (-(-patches // longest_window), longest_window),
            "window_places": (patches,),
            "frame_slots": (frames, patches // frames),
            "frame_places": (patches,),
            "window_segments": (patches,),
            "frame_segments": (patches,),
        }
        return {name: sizes[name] for name in dict.fromkeys((*VISION_INPUTS, *DENSE_VISION_INPUTS))}

    # the most windows: every window partial, at most one merged token each
    most = shapes(largest * max_batch, max_batch)
    most["window_slots"] = (largest * max_batch // unit, window)
    return Profile(shapes(unit, 1), shapes(largest, 1), most)


def decoder_profile(manifest: ModelManifest, max_batch: int) -> Profile:
    gen, text = manifest.generation, manifest.text
    context = max_patches(manifest) // manifest.vision.merge_size**2 + 2 + len(gen.prompt_ids)
    longest_input = context + 2 * gen.block_size  # prefill fused with the first block
    longest_cache = context + gen.max_new_tokens + 2 * gen.block_size

    def shapes(batch: int, length: int, past: int, logits: int) -> Shapes:
        kv = (batch, text.num_kv_heads, past, text.head_dim)
        sizes: Shapes = {
            "inputs_embeds": (batch, length, text.hidden_size),
            "position_ids": (3, batch, length),
            "attention_mask": (batch, length, past + length),
            "logits_positions": (logits,),
        }
        return {name: sizes.get(name, kv) for name in decoder_input_names(text.num_layers)}

    return Profile(
        shapes(1, 1, 0, 1),
        shapes(1, 2 * gen.block_size, context + gen.max_new_tokens // 2, gen.block_size),
        shapes(max_batch, longest_input, longest_cache, longest_input),
    )


def max_patches(manifest: ModelManifest) -> int:
    """Patches of the largest image the preprocessing produces (its area is at most max_pixels)."""
    return int(manifest.preprocess["max_pixels"]) // manifest.vision.patch_size**2


def _format(shapes: Shapes) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())
