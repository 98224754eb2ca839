"""The scale options on CPU: LoRA (merged on save, resumable), bf16 autocast, gradient
checkpointing, device checks, streamed images and peak memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo.errors import UserError
from echo.model import EchoVLM
from echo.training.checkpoint import GenerationSpec, save_checkpoint
from echo.training.loop import LoopConfig, Trainer
from echo.training.objectives import NoiseConfig, ar_loss, rad_loss
from echo.training.scale import add_lora, peak_memory, resolve_device

from .conftest import make_model


def _trainer(model, tokenizer, out, steps: int, **loop) -> Trainer:
    config = LoopConfig(steps=steps, lr=1e-2, warmup_steps=1, val_every=steps, checkpoint_every=steps, **loop)
    save = lambda m, d: save_checkpoint(m, tokenizer, GenerationSpec(), d)  # noqa: E731
    return Trainer(model, out, config, save, "test")


def _batches(batcher, tokenizer, n: int):
    return [batcher.make([i % 8, (i + 1) % 8], pad_with=tokenizer.pad_id) for i in range(n)]


def test_lora_trains_only_adapters_and_saves_the_merged_model(tokenizer, batcher, tmp_path):
    model = make_model(tokenizer)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = add_lora(model, rank=4, alpha=8.0, targets=("q_proj", "v_proj"))
    cfg = model.config
    kv = cfg.num_key_value_heads * cfg.head_dim
    per_layer = 4 * (cfg.hidden_size + cfg.hidden_size) + 4 * (cfg.hidden_size + kv)
    assert trainable == cfg.num_hidden_layers * per_layer + cfg.hidden_size  # + the <|MASK|> row
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert "lora_mask_row" in names
    layers = [name for name in names if name != "lora_mask_row"]
    assert layers and all("lora_" in name and name.startswith("model.layers.") for name in layers)

    trainer = _trainer(model, tokenizer, tmp_path / "out", steps=3)
    batches = _batches(batcher, tokenizer, 4)
    trainer.run(iter(batches), ar_loss, ar_loss, batches[3:])
    after = {n.replace(".base_layer.", "."): p.detach() for n, p in model.named_parameters()}
    assert all(torch.equal(after[name], before) for name, before in base.items())  # base untouched
    assert any(float(p.abs().max()) > 0 for name, p in after.items() if "lora_B" in name)

    saved = EchoVLM.from_pretrained(tmp_path / "out" / "last")  # strict: plain Qwen2.5-VL names
    batch = batches[0]
    ids = torch.cat([batch.context_ids, batch.response_ids], dim=1)
    with torch.no_grad():
        expected = model.eval().logits_for(ids, batch.pixel_values, batch.image_grid_thw)
        merged = saved.logits_for(ids, batch.pixel_values, batch.image_grid_thw)
        untrained = make_model(tokenizer).eval().logits_for(ids, batch.pixel_values, batch.image_grid_thw)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)
    assert (merged - untrained).abs().max() > 1e-3  # the adapters are in the saved weights


def test_lora_trains_the_mask_row_and_saves_it_into_the_embedding(tokenizer, batcher, tmp_path):
    """Under LoRA the embeddings are frozen, but RAD must learn the <|MASK|> token block diffusion
    adds: its row trains as an adapter and the saved checkpoint holds it, every other row as it was."""
    model = make_model(tokenizer)
    mask = tokenizer.mask_id
    embedding = model.model.embed_tokens.weight.detach().clone()
    add_lora(model, rank=2, alpha=4.0, targets=("q_proj",))
    noise = NoiseConfig(block_size=4, mask_id=mask)
    generator = torch.Generator().manual_seed(0)
    batches = _batches(batcher, tokenizer, 4)
    loss = lambda m, b: rad_loss(m, b, noise, generator)  # noqa: E731
    _trainer(model, tokenizer, tmp_path / "out", steps=3).run(iter(batches), loss, loss, batches[3:])
    saved = EchoVLM.from_pretrained(tmp_path / "out" / "last").model.embed_tokens.weight.detach()
    changed = (saved != embedding).any(dim=1).nonzero().flatten().tolist()
    assert changed == [mask]
    torch.testing.assert_close(saved[mask], model.lora_mask_row.detach(), atol=0, rtol=0)
    # AR batches hold no mask: the row gets no gradient, so weight decay leaves it alone too.
    ar_model = make_model(tokenizer)
    add_lora(ar_model, rank=2, alpha=4.0, targets=("q_proj",))
    before = ar_model.lora_mask_row.detach().clone()
    _trainer(ar_model, tokenizer, tmp_path / "ar", steps=2).run(iter(batches), ar_loss, ar_loss, batches[3:])
    assert torch.equal(ar_model.lora_mask_row.detach(), before)


def test_lora_resumes_from_last_as_if_never_stopped(tokenizer, batcher, tmp_path):
    batches = _batches(batcher, tokenizer, 4)

    def adapters(out, steps, resume: bool):
        model = make_model(tokenizer)
        add_lora(model, rank=2, alpha=4.0, targets=("q_proj", "o_proj"))
        trainer = _trainer(model, tokenizer, out, steps)
        if resume:
            assert trainer.try_resume(lambda _d: pytest.fail("LoRA resumes from trainer.pt"))
        trainer.run(iter(batches[trainer.state.step :]), ar_loss, ar_loss, batches[:1])
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    straight = adapters(tmp_path / "a", 4, resume=False)
    adapters(tmp_path / "b", 2, resume=False)
    resumed = adapters(tmp_path / "b", 4, resume=True)
    assert straight.keys() == resumed.keys()
    mismatched = _trainer(make_model(tokenizer), tokenizer, tmp_path / "b", 4)
    with pytest.raises(UserError, match="holds adapters this model lacks"):
        mismatched.try_resume(lambda _d: None)
    lora = make_model(tokenizer)
    add_lora(lora, rank=2, alpha=4.0, targets=("q_proj",))
    _trainer(make_model(tokenizer), tokenizer, tmp_path / "full", 1).run(
        iter(batches), ar_loss, ar_loss, batches[:1]
    )
    with pytest.raises(UserError, match="was trained without LoRA"):
        _trainer(lora, tokenizer, tmp_path / "full", 2).try_resume(lambda _d: None)
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=1e-6)


def test_bf16_autocast_runs_a_step_on_cpu_with_fp32_weights(tokenizer, batcher, tmp_path):
    model = make_model(tokenizer)
    before = model.lm_head.weight.detach().clone()
    seen = []

    def loss(m, batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return ar_loss(m, batch)

    batches = _batches(batcher, tokenizer, 2)
    state = _trainer(model, tokenizer, tmp_path, 1, precision="bf16").run(iter(batches), loss, loss, batches)
    assert state.step == 1 and np.isfinite(state.history[-1]["train_loss"])
    assert seen[0] == (True, torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.float32 and not torch.equal(model.lm_head.weight, before)


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer, batcher, monkeypatch):
    batch = batcher.make([0, 1], pad_with=tokenizer.eos_id)
    noise = NoiseConfig(block_size=4, mask_id=tokenizer.mask_id)

    def gradients(checkpointed: bool) -> dict[str, torch.Tensor]:
        model = make_model(tokenizer).train()
        model.gradient_checkpointing_enable(checkpointed)
        rad_loss(model, batch, noise, torch.Generator().manual_seed(0)).backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    plain = gradients(False)
    assert not calls
    checkpointed = gradients(True)
    assert len(calls) == 2 + 2  # two decoder layers and two vision blocks of the tiny model
    assert plain.keys() == checkpointed.keys() and any(n.startswith("visual.") for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a torch without CUDA")
def test_cuda_without_cuda_is_a_clear_user_error():
    with pytest.raises(UserError, match=r"--device cuda: this torch has no CUDA"):
        resolve_device("cuda")
    with pytest.raises(UserError, match=r"--device cuda:1: this torch has no CUDA"):
        LoopConfig(device="cuda:1")
    with pytest.raises(UserError, match="--device must be cpu, cuda or cuda:N"):
        resolve_device("tpu")
    with pytest.raises(UserError, match="--precision must be one of fp32, bf16"):
        LoopConfig(precision="fp16")
    assert resolve_device("cpu") == torch.device("cpu")


def test_peak_memory_is_measured():
    peak = peak_memory(torch.device("cpu"))
    assert peak["peak_rss_mib"] > 50 and peak["peak_cuda_mib"] is None  # torch alone takes more


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory):
    from echo.data.synthetic import generate_dataset

    return generate_dataset(6, seed=1, out_dir=tmp_path_factory.mktemp("data"), size=64, workers=1)


def test_streamed_images_give_the_same_batches(small_manifest, tokenizer, tmp_path):
    from echo.training.batches import Batcher
    from echo.training.examples import CachedImages, load_examples

    from .conftest import PREPROCESS

    held = load_examples(small_manifest, None, PREPROCESS)
    streamed = load_examples(small_manifest, None, PREPROCESS, tmp_path, stream=True)
    again = load_examples(small_manifest, None, PREPROCESS, tmp_path, stream=False)  # from the cache
    assert isinstance(streamed.images, CachedImages) and isinstance(streamed.images.flat, np.memmap)
    assert not isinstance(again.images.flat, np.memmap)
    make = lambda examples: Batcher(examples, tokenizer, "Describe.", PREPROCESS, 4, 64)  # noqa: E731
    for a, b, c in zip(*(make(e).ordered(4, 0) for e in (held, streamed, again)), strict=True):
        for name in ("pixel_values", "image_grid_thw", "context_ids", "response_ids", "response_mask"):
            assert torch.equal(getattr(a, name), getattr(b, name)) and torch.equal(
                getattr(a, name), getattr(c, name)
            )
    with pytest.raises(UserError, match="needs an image cache"):
        load_examples(small_manifest, None, PREPROCESS, stream=True)


def test_weights_load_in_bf16_only_where_adamw_does_not_update_them(tokenizer, tmp_path):
    from echo.training.checkpoint import load_checkpoint
    from echo.training.scale import weights_dtype

    bf16, lora = LoopConfig(precision="bf16"), LoopConfig(precision="bf16", lora_rank=4)
    assert weights_dtype(LoopConfig(), trains=False) == torch.float32
    assert weights_dtype(bf16, trains=False) == torch.bfloat16  # DCD's teacher
    assert weights_dtype(bf16, trains=True) == torch.float32  # fp32 master weights
    assert weights_dtype(lora, trains=True) == torch.bfloat16  # a frozen LoRA base
    save_checkpoint(make_model(tokenizer), tokenizer, GenerationSpec(), tmp_path)
    assert load_checkpoint(tmp_path)[0].dtype == torch.float32
    assert load_checkpoint(tmp_path, torch.bfloat16)[0].dtype == torch.bfloat16
