"""Parity with transformers' Qwen2_5_VLForConditionalGeneration and checkpoint compatibility."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from echo.errors import UserError
from echo.model import EchoVLConfig, EchoVLM


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


@pytest.mark.parametrize(
    "grids",
    [
        [[1, 10, 6], [1, 10, 6]],  # two rows; 5x3 merged tokens: full and partial 2x2 windows
        [[1, 6, 10]],
        [[1, 4, 4]],  # a single window
    ],
)
def test_logits_match_transformers_under_a_causal_mask(hf, hf_dir: Path, grids: list[list[int]]) -> None:
    reference_model, _ = hf.load(hf_dir)
    ours = EchoVLM.from_pretrained(hf_dir)
    pixel_values, grid, ids = hf.image_inputs(grids, prefix=[7, 8], suffix=[10, 11, 12, 13])
    reference = hf.logits(reference_model, ids, pixel_values, grid)
    with torch.no_grad():
        logits = ours.logits_for(ids, pixel_values, grid)
    assert logits.shape == reference.shape == (len(grids), ids.shape[1], 48)
    assert relative_error(logits, reference) < 1e-4


def test_rope_index_equals_transformers(hf, hf_dir: Path) -> None:
    reference_model, _ = hf.load(hf_dir)
    ours = EchoVLM.from_pretrained(hf_dir)
    _, grid, ids = hf.image_inputs([[1, 10, 6], [1, 10, 6]], prefix=[7], suffix=[10, 11])
    expected, _ = reference_model.model.get_rope_index(
        ids, mm_token_type_ids=(ids == hf.IMAGE_TOKEN).int(), image_grid_thw=grid
    )
    assert torch.equal(ours.rope_index(ids, grid), expected)


def test_vision_features_equal_transformers(hf, hf_dir: Path) -> None:
    reference_model, _ = hf.load(hf_dir)
    ours = EchoVLM.from_pretrained(hf_dir)
    pixel_values, grid, _ = hf.image_inputs([[1, 10, 6], [1, 6, 10]], prefix=[], suffix=[])
    with torch.no_grad():
        expected = torch.cat(reference_model.model.get_image_features(pixel_values, grid).pooler_output)
        got = ours.encode_images(pixel_values, grid)
    assert got.shape == (30, 64)
    assert relative_error(got, expected) < 1e-5


def test_transformers_checkpoint_loads_with_every_weight_used(hf_dir: Path) -> None:
    with safe_open(str(hf_dir / "model.safetensors"), framework="pt") as handle:
        on_disk = set(handle.keys())
    model = EchoVLM.from_pretrained(hf_dir)
    assert set(model.state_dict()) == on_disk  # strict load: nothing missing, nothing unexpected
    stored = load_file(str(hf_dir / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in stored.items())


def test_our_checkpoint_loads_into_transformers_with_nothing_missing(
    hf, hf_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ours = EchoVLM.from_pretrained(hf_dir)
    ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    with caplog.at_level(logging.WARNING, logger="transformers"):
        reference_model, info = hf.load(tmp_path)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    pixel_values, grid, ids = hf.image_inputs([[1, 10, 6]], prefix=[], suffix=[9, 10])
    with torch.no_grad():
        logits = ours.logits_for(ids, pixel_values, grid)
    assert relative_error(logits, hf.logits(reference_model, ids, pixel_values, grid)) < 1e-4


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    config = EchoVLConfig.tiny(vocab_size=40, block_size=4, prompt_attention="block_causal")
    torch.manual_seed(3)
    model = EchoVLM(config)
    model.save_pretrained(tmp_path)
    loaded = EchoVLM.from_pretrained(tmp_path)
    assert loaded.config == config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[name], restored[name]) for name in original)


def test_save_in_bfloat16_records_the_dtype(tmp_path: Path) -> None:
    model = EchoVLM(EchoVLConfig.tiny())
    model.save_pretrained(tmp_path, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert load_file(str(tmp_path / "model.safetensors"))["lm_head.weight"].dtype == torch.bfloat16
    assert EchoVLM.from_pretrained(tmp_path, dtype=None).dtype == torch.bfloat16
    assert EchoVLM.from_pretrained(tmp_path).dtype == torch.float32


def test_tied_embeddings_are_stored_once_and_load_both_ways(hf, tmp_path: Path) -> None:
    hf.build(tie=True).save_pretrained(tmp_path / "hf")
    ours = EchoVLM.from_pretrained(tmp_path / "hf")
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    ours.save_pretrained(tmp_path / "ours")
    assert "lm_head.weight" not in load_file(str(tmp_path / "ours" / "model.safetensors"))
    back, info = hf.load(tmp_path / "ours")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    pixel_values, grid, ids = hf.image_inputs([[1, 4, 4]], prefix=[], suffix=[9])
    with torch.no_grad():
        logits = ours.logits_for(ids, pixel_values, grid)
    assert relative_error(logits, hf.logits(back, ids, pixel_values, grid)) < 1e-4


def test_in_memory_names_of_newer_transformers_load(hf, hf_dir: Path, tmp_path: Path) -> None:
    reference_model, _ = hf.load(hf_dir)
    state = reference_model.state_dict()
    assert any(name.startswith("model.language_model.") for name in state)  # what 4.52+ holds in memory
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    ours = EchoVLM.from_pretrained(tmp_path)
    reference = EchoVLM.from_pretrained(hf_dir)
    assert all(torch.equal(t, reference.state_dict()[k]) for k, t in ours.state_dict().items())


def test_sharded_checkpoint_loads(hf, hf_dir: Path, tmp_path: Path) -> None:
    reference_model, _ = hf.load(hf_dir)
    reference_model.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    sharded = EchoVLM.from_pretrained(tmp_path)
    single = EchoVLM.from_pretrained(hf_dir)
    assert all(torch.equal(t, single.state_dict()[k]) for k, t in sharded.state_dict().items())


def _copy_checkpoint(source: Path, target: Path, edit) -> Path:
    target.mkdir()
    (target / "config.json").write_text((source / "config.json").read_text())
    tensors = load_file(str(source / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(target / "model.safetensors"))
    return target


def test_missing_weight_is_named(hf_dir: Path, tmp_path: Path) -> None:
    broken = _copy_checkpoint(hf_dir, tmp_path / "c", lambda t: t.pop("model.norm.weight"))
    with pytest.raises(UserError, match=r"missing weights: model\.norm\.weight"):
        EchoVLM.from_pretrained(broken)


def test_unexpected_weight_is_named(hf_dir: Path, tmp_path: Path) -> None:
    broken = _copy_checkpoint(
        hf_dir, tmp_path / "c", lambda t: t.update({"model.extra.bias": torch.zeros(2)})
    )
    with pytest.raises(UserError, match=r"unexpected weights: model\.extra\.bias"):
        EchoVLM.from_pretrained(broken)


def test_wrongly_shaped_weight_is_named(hf_dir: Path, tmp_path: Path) -> None:
    broken = _copy_checkpoint(
        hf_dir, tmp_path / "c", lambda t: t.update({"model.norm.weight": torch.ones(3)})
    )
    with pytest.raises(UserError, match=r"wrong shape: model\.norm\.weight \[3\] \(config says \[64\]\)"):
        EchoVLM.from_pretrained(broken)


def test_weight_in_two_naming_schemes_is_an_error(hf_dir: Path, tmp_path: Path) -> None:
    def duplicate(tensors: dict[str, torch.Tensor]) -> None:
        tensors["model.language_model.norm.weight"] = tensors["model.norm.weight"].clone()

    broken = _copy_checkpoint(hf_dir, tmp_path / "c", duplicate)
    with pytest.raises(UserError, match=r"weight 'model\.norm\.weight' appears in both"):
        EchoVLM.from_pretrained(broken)


def test_directory_without_weights_or_config_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such checkpoint directory"):
        EchoVLM.from_pretrained(tmp_path / "absent")
    with pytest.raises(UserError, match="no config.json"):
        EchoVLM.from_pretrained(tmp_path)
    EchoVLConfig.tiny().save(tmp_path)
    with pytest.raises(UserError, match=r"no \*\.safetensors weights"):
        EchoVLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="cannot read safetensors"):
        EchoVLM.from_pretrained(tmp_path)
