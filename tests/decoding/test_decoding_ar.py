"""Greedy AR decoding: the KV cache changes nothing but the cost."""

from __future__ import annotations

import pytest
import torch

from echo.decoding import decode_ar
from echo.errors import UserError


def test_cached_decoding_equals_uncached(tiny) -> None:
    model = tiny.model()
    ctx = tiny.context(model, rows=2)
    cached = decode_ar(model, ctx, 12, return_logits=True)
    uncached = decode_ar(model, ctx, 12, use_cache=False, return_logits=True)
    assert cached.tokens == uncached.tokens
    assert all(len(row) == 12 for row in cached.tokens) and cached.tokens[0] != cached.tokens[1]
    for ours, reference in zip(cached.logits, uncached.logits, strict=True):
        assert ours.shape == reference.shape == (12, 1, 48)
        torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    assert cached.forwards == uncached.forwards == 12


def test_tokens_are_the_argmax_of_their_logits(tiny) -> None:
    model = tiny.model()
    result = decode_ar(model, tiny.context(model, rows=1), 8, return_logits=True)
    assert result.logits[0][:, 0].argmax(-1).tolist() == result.tokens[0]
    assert result.steps_per_block == [[1] * 8]
    assert result.prefill_seconds > 0 and result.seconds >= result.prefill_seconds


def test_eos_stops_a_row_and_the_others_go_on(tiny) -> None:
    model = tiny.model()
    ctx = tiny.context(model, rows=2)
    free = decode_ar(model, ctx, 12).tokens
    eos = free[0][3]
    assert eos not in free[0][:3]
    model.config.eos_token_id = eos
    stopped = decode_ar(model, ctx, 12)

    def until(row: list[int]) -> list[int]:
        return row[: row.index(eos)] if eos in row else row

    assert stopped.tokens == [until(free[0]), until(free[1])]
    assert stopped.tokens[0] == free[0][:3]
    assert stopped.steps_per_block[0] == [1, 1, 1, 1]  # three tokens and the eos
    assert stopped.forwards == max(len(steps) for steps in stopped.steps_per_block)


def test_the_mask_token_is_never_generated(tiny) -> None:
    model = tiny.model()
    with torch.no_grad():
        model.lm_head.weight[model.config.mask_token_id] *= 100  # the model "wants" the mask token
    result = decode_ar(model, tiny.context(model, rows=1), 8, return_logits=True)
    assert (result.logits[0][:, 0].argmax(-1) == model.config.mask_token_id).any()
    assert model.config.mask_token_id not in result.tokens[0]


def test_bad_length_is_a_user_error(tiny) -> None:
    model = tiny.model()
    with pytest.raises(UserError, match="max new tokens must be >= 1, got 0"):
        decode_ar(model, tiny.context(model), 0)
