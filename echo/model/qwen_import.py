"""Weight edits a public Qwen2.5-VL checkpoint needs before block diffusion: a row for <|MASK|>.

The mask token is new to the model, so its embedding (and, with an untied head, its output row)
starts as the mean of the trained rows: a neutral input that the RAD stage then learns. When the
token's id is past the embedding's last row (a tokenizer exactly as large as the embedding), the
vocabulary grows to hold it; a tied head stays tied to the grown embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from echo.model.vlm import EchoVLM


def grow_vocabulary(model: EchoVLM, vocab_size: int) -> None:
    """Give the embedding and the head `vocab_size` rows (>= today's); new rows are the mean row."""
    old_size = model.config.vocab_size
    if vocab_size < old_size:
        raise ValueError(f"cannot shrink the vocabulary from {old_size} to {vocab_size}")
    if vocab_size == old_size:
        return
    embedding = model.model.embed_tokens.weight
    model.model.embed_tokens = nn.Embedding.from_pretrained(
        _with_mean_rows(embedding.detach(), vocab_size), freeze=False
    )
    head = nn.Linear(model.config.hidden_size, vocab_size, bias=False, dtype=embedding.dtype)
    if model.config.tie_word_embeddings:
        head.weight = model.model.embed_tokens.weight
    else:
        head.weight = nn.Parameter(_with_mean_rows(model.lm_head.weight.detach(), vocab_size))
    model.lm_head = head
    model.config = model.config.with_changes(vocab_size=vocab_size)
    model.model.config = model.config


def set_mean_rows(model: EchoVLM, token_id: int) -> None:
    """The embedding row (and an untied head's row) of `token_id` become the mean of all rows."""
    with torch.no_grad():
        weights = [model.model.embed_tokens.weight]
        if not model.config.tie_word_embeddings:
            weights.append(model.lm_head.weight)
        for weight in weights:
            weight[token_id] = weight.float().mean(dim=0).to(weight.dtype)


def _with_mean_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """(V, H) -> (rows, H): the old rows, then copies of their mean (in the weight's dtype)."""
    mean = weight.float().mean(dim=0).to(weight.dtype)
    extra = mean.expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra]).contiguous()
