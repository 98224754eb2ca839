"""Greedy autoregressive decoding with the KV cache: the stage-1 model's decoder."""

from __future__ import annotations

import torch

from echo.decoding.blocks import check_decoding_args
from echo.decoding.context import Context
from echo.decoding.result import DecodeResult
from echo.decoding.session import DecodeSession
from echo.model.masks import causal_mask
from echo.model.vlm import EchoVLM


def decode_ar(
    model: EchoVLM, ctx: Context, max_new_tokens: int, use_cache: bool = True, return_logits: bool = False
) -> DecodeResult:
    """One token per forward, causal attention. The prefill's last logits give the first token.
    use_cache=False re-runs the whole sequence every step (the reference the cache is tested
    against). Stops at eos (dropped) or after max_new_tokens."""
    check_decoding_args(1, max_new_tokens)
    config = model.config
    batch = ctx.batch_size
    tokens: list[list[int]] = [[] for _ in range(batch)]
    step_logits: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    confidences: list[list[float]] = [[] for _ in range(batch)]

    with torch.no_grad():
        session = DecodeSession(model, ctx, max_new_tokens, causal_mask)
        generated = session.context_ids[:, :0]  # (n_live, i): what this call produced so far
        logits = session.forward(session.context_ids, keep=session.context_len)[:, -1]
        for i in range(max_new_tokens):
            logits = logits.float()
            if return_logits:
                for j, row in enumerate(session.rows):
                    step_logits[row].append(logits[j : j + 1].clone())
            if config.mask_token_id is not None:
                logits[:, config.mask_token_id] = float("-inf")
            next_ids = logits.argmax(dim=-1)  # (n_live,)
            top_probs = logits.softmax(dim=-1).gather(1, next_ids[:, None])[:, 0]
            live = []
            for j, (row, token) in enumerate(zip(session.rows, next_ids.tolist(), strict=True)):
                if token == config.eos_token_id:
                    continue
                tokens[row].append(token)
                confidences[row].append(float(top_probs[j]))
                live.append(j)
            if not live or i == max_new_tokens - 1:
                break
            if len(live) < len(session.rows):
                session.keep_rows(live)
                index = torch.tensor(live, device=next_ids.device)
                next_ids, generated = next_ids[index], generated[index]
            generated = torch.cat([generated, next_ids[:, None]], dim=1)
            if use_cache:
                logits = session.forward(next_ids[:, None], keep=1)[:, -1]
            else:
                session.reset_cache()
                logits = session.forward(torch.cat([session.context_ids, generated], dim=1), keep=0)[:, -1]
        seconds = session.elapsed()

    return DecodeResult(
        tokens=tokens,
        forwards=session.forwards,
        seconds=seconds,
        prefill_seconds=session.prefill_seconds,
        steps_per_block=[[1] * (len(row) + (len(row) < max_new_tokens)) for row in tokens],
        logits=[torch.stack(rows) for rows in step_logits] if return_logits else None,
        confidences=confidences,
    )
