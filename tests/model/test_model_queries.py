"""The decoder asked for some positions only (`queries`): what the exported decoder graph runs."""

from __future__ import annotations

import torch

from echo.model.config import EchoVLConfig
from echo.model.masks import block_causal_mask
from echo.model.vlm import EchoVLM


def _inputs(model: EchoVLM, batch: int, length: int, past: int):
    config = model.config
    generator = torch.Generator().manual_seed(3)
    embeds = torch.randn(batch, length, config.hidden_size, generator=generator)
    positions = (torch.arange(length) + past).expand(3, batch, length)
    mask = block_causal_mask(length, 4, past, offset=past).expand(batch, -1, -1)
    shape = (batch, config.num_key_value_heads, past, config.head_dim)
    cache = [
        (torch.randn(shape, generator=generator), torch.randn(shape, generator=generator))
        for _ in range(config.num_hidden_layers)
    ]
    return embeds, positions, mask, cache


def test_states_at_the_queried_positions_equal_the_whole_forward_and_the_cache_is_whole() -> None:
    torch.manual_seed(0)
    model = EchoVLM(EchoVLConfig.tiny()).eval()
    embeds, positions, mask, cache = _inputs(model, batch=2, length=12, past=5)
    queries = torch.arange(4, 12)
    with torch.no_grad():
        whole, whole_cache = model.hidden_states(embeds, positions, mask, cache)
        some, some_cache = model.hidden_states(embeds, positions, mask, cache, queries=queries)
    assert some.shape == (2, 8, model.config.hidden_size)
    torch.testing.assert_close(some, whole[:, 4:], rtol=1e-5, atol=1e-5)
    for (k, v), (k_whole, v_whole) in zip(some_cache, whole_cache, strict=True):
        assert k.shape == k_whole.shape == (2, model.config.num_key_value_heads, 17, model.config.head_dim)
        torch.testing.assert_close(k, k_whole, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, v_whole, rtol=1e-5, atol=1e-5)


def test_only_the_last_layer_is_narrowed() -> None:
    model = EchoVLM(EchoVLConfig.tiny()).eval()
    embeds, positions, mask, cache = _inputs(model, batch=1, length=10, past=0)
    rows: list[int] = []
    hooks = [
        layer.mlp.register_forward_hook(lambda module, inputs, output: rows.append(inputs[0].shape[1]))
        for layer in model.model.layers
    ]
    with torch.no_grad():
        model.hidden_states(embeds, positions, mask, None, queries=torch.tensor([9]))
    for hook in hooks:
        hook.remove()
    assert rows == [10] * (model.config.num_hidden_layers - 1) + [1]
