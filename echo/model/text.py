"""The Qwen2 decoder with M-RoPE, explicit key/value tensors and boolean attention masks.

The KV cache is a plain list of (k, v) per layer, each (B, n_kv_heads, S, head_dim), because the
ONNX export feeds them as graph inputs and outputs; no Cache objects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from echo.model.config import EchoVLConfig
from echo.model.layers import GatedMLP, RMSNorm
from echo.model.rope import apply_rotary, mrope_cos_sin

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


def run_layer(layer: Callable[..., Any], checkpointed: bool, *args: Any) -> Any:
    """`layer(*args)`; with `checkpointed` (training with gradients) its activations are not kept
    but recomputed in the backward pass (torch.utils.checkpoint): less memory, one more forward."""
    if checkpointed and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


class Attention(nn.Module):
    def __init__(self, config: EchoVLConfig) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        queries: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, H) -> the attended states and the cache (k, v) over past + T. With `queries` (K,)
        positions < T, only those positions query: keys and values still cover every position (the
        cache needs them), the output is (B, K, H) and `attend` is read at those rows."""
        b, t, _ = x.shape
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        k = apply_rotary(k, cos, sin)
        if queries is not None:
            x, cos, sin, attend = x[:, queries], cos[:, queries], sin[:, queries], attend[:, queries]
        q = self.q_proj(x).view(b, x.shape[1], self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        q = apply_rotary(q, cos, sin)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nkv, S, hd)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        groups = self.n_heads // self.n_kv_heads
        if groups > 1:  # expand K/V heads to the query heads (explicit, so the export stays plain)
            k = k[:, :, None].expand(-1, -1, groups, -1, -1).reshape(b, self.n_heads, -1, self.head_dim)
            v = v[:, :, None].expand(-1, -1, groups, -1, -1).reshape(b, self.n_heads, -1, self.head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend[:, None])  # (B, nh, T, hd)
        return self.o_proj(out.transpose(1, 2).reshape(b, x.shape[1], -1)), present


class DecoderLayer(nn.Module):
    def __init__(self, config: EchoVLConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        queries: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """With `queries`, the layer's output is at those positions only (see Attention.forward)."""
        attended, present = self.self_attn(self.input_layernorm(x), cos, sin, attend, past, queries)
        x = (x if queries is None else x[:, queries]) + attended
        return x + self.mlp(self.post_attention_layernorm(x)), present


class TextModel(nn.Module):
    """Named as the checkpoints' "model.*": embed_tokens, layers.N, norm."""

    def __init__(self, config: EchoVLConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False  # set by EchoVLM.gradient_checkpointing_enable

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: KVCache | None = None,
        queries: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """(B, T, H) -> final-norm hidden states (B, T, H) and the cache covering past + T. With
        `queries` (K,) positions < T, the states are (B, K, H) at those positions: the last layer
        runs its queries, MLP and norm there only (every layer's keys and values still cover all T,
        and no earlier layer's output depends on it). The exported decoder graph asks for the
        positions that get logits."""
        cfg = self.config
        b, t, _ = inputs_embeds.shape
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        assert position_ids.shape == (3, b, t), (
            f"position_ids must be (3, {b}, {t}), got {tuple(position_ids.shape)}"
        )
        if attention_mask.dim() == 2:
            attention_mask = attention_mask.expand(b, -1, -1)
        assert attention_mask.dtype == torch.bool, f"attention_mask must be bool, got {attention_mask.dtype}"
        assert attention_mask.shape == (b, t, past_len + t), (
            f"attention_mask must be (B, T, past + T) = ({b}, {t}, {past_len + t}), "
            f"got {tuple(attention_mask.shape)}"
        )
        assert past_key_values is None or len(past_key_values) == len(self.layers), (
            f"past_key_values has {len(past_key_values or [])} layers, the model {len(self.layers)}"
        )
        cos, sin = mrope_cos_sin(
            position_ids, cfg.head_dim, cfg.rope_theta, cfg.mrope_section, inputs_embeds.dtype
        )
        attend = attention_mask.to(inputs_embeds.device)
        x = inputs_embeds
        present: KVCache = []
        for index, layer in enumerate(self.layers):
            past = None if past_key_values is None else past_key_values[index]
            only = queries if index == len(self.layers) - 1 else None
            x, kv = run_layer(
                layer, self.gradient_checkpointing and self.training, x, cos, sin, attend, past, only
            )
            present.append(kv)
        return self.norm(x), present
