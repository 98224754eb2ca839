"""EchoVLM: a Qwen2.5-VL vision-language model whose attention is whatever mask the caller gives.

    ids, pixels --embed--> inputs_embeds --forward(positions, mask, past KV)--> logits, present KV

The same network serves the AR stage (causal mask), the block-diffusion teacher (block-causal and
RAD masks) and the one-step student. Samplers live in echo.decoding, masks in echo.model.masks.
Module names equal the checkpoints' weight names, so a Hugging Face Qwen2.5-VL directory
(config.json + *.safetensors) loads and saves without conversion.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from echo.errors import UserError
from echo.model.checkpoint import describe_names, read_weights, write_weights
from echo.model.config import EchoVLConfig
from echo.model.masks import causal_mask
from echo.model.rope import rope_index
from echo.model.text import KVCache, TextModel
from echo.model.vision import VisionTower

TIED_HEAD = "lm_head.weight"
TIED_EMBEDDING = "model.embed_tokens.weight"
LORA_MASK_ROW = "lora_mask_row"  # a trainable <|MASK|> row while LoRA trains (echo.training.scale)


class EchoVLM(nn.Module):
    def __init__(self, config: EchoVLConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTower(config.vision)
        self.model = TextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear | nn.Conv3d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)

    def gradient_checkpointing_enable(self, enabled: bool = True) -> None:
        """Recompute each decoder layer's and vision block's activations in the backward pass
        instead of keeping them (training only; the same gradients, less memory)."""
        self.model.gradient_checkpointing = enabled
        self.visual.gradient_checkpointing = enabled

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    # ---- checkpoints ----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype | None = torch.float32, device: str | torch.device = "cpu"
    ) -> EchoVLM:
        """Load config.json + *.safetensors (single file or sharded index). Strict: a missing,
        unexpected or wrongly shaped weight is a UserError naming it. dtype=None keeps the stored
        dtypes. A tied head may be stored or not (transformers leaves it out)."""
        directory = Path(path)
        if not directory.is_dir():
            raise UserError(f"{directory}: no such checkpoint directory")
        config = EchoVLConfig.from_dir(directory)
        tensors = read_weights(directory, device)
        with torch.device("meta"):
            model = cls(config)  # no memory, no random init: every parameter comes from the file
        expected = {name: p.shape for name, p in model.state_dict(keep_vars=True).items()}
        if config.tie_word_embeddings:
            expected.pop(TIED_HEAD)
            tensors.pop(TIED_HEAD, None)
        missing = sorted(expected.keys() - tensors.keys())
        unexpected = sorted(tensors.keys() - expected.keys())
        if missing:
            raise UserError(f"{directory}: missing weights: {describe_names(missing)}")
        if unexpected:
            raise UserError(f"{directory}: unexpected weights: {describe_names(unexpected)}")
        wrong = [
            f"{name} {list(tensors[name].shape)} (config says {list(shape)})"
            for name, shape in expected.items()
            if tensors[name].shape != shape
        ]
        if wrong:
            raise UserError(f"{directory}: weights with the wrong shape: {describe_names(wrong)}")
        model.load_state_dict(tensors, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        if dtype is not None:
            model.to(dtype)
        return model.eval()

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write config.json and model.safetensors (on-disk names; a tied head left out, as
        transformers does). Nothing else is copied: the caller adds tokenizer.json."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = dict(self.state_dict())
        if self.config.tie_word_embeddings:
            tensors.pop(TIED_HEAD)
        target_dtype = dtype or self.dtype
        tensors = {
            name: (t.to(target_dtype) if t.is_floating_point() else t).detach().cpu()
            for name, t in tensors.items()
        }
        self.config.save(directory, dtype=str(target_dtype).removeprefix("torch."))
        write_weights(tensors, directory)
        return directory

    # ---- inputs ---------------------------------------------------------------------------------

    def encode_images(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """(N, C*T*P*P) patches of all images -> (N / merge_unit, hidden): one row per image token."""
        return self.visual(pixel_values.to(self.device), image_grid_thw)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids -> (B, T, H); the image-pad positions take the vision features, in order.

        `image_features` are `encode_images`' output when the caller already ran the tower (the
        pixels are then not read). Without pixels or features every id keeps its token embedding
        (a caller that places features itself, e.g. twice in one row, starts from here)."""
        assert input_ids.dim() == 2, f"input_ids must be (B, T), got {tuple(input_ids.shape)}"
        embeds = self.model.embed_tokens(input_ids.to(self.device))
        mask_row = getattr(self, LORA_MASK_ROW, None)  # LoRA training: the <|MASK|> row trains apart
        if mask_row is not None:
            is_mask = input_ids.to(self.device) == self.config.mask_token_id
            if bool(is_mask.any()):  # no mask in the batch: no gradient, so no weight decay either
                embeds = torch.where(is_mask[..., None], mask_row.to(embeds.dtype), embeds)
        if pixel_values is None and image_features is None:
            return embeds
        is_image = input_ids.to(self.device) == self.config.image_token_id
        n_image_tokens = int(is_image.sum())
        if image_features is None:
            if image_grid_thw is None:
                raise ValueError("pixel_values given without image_grid_thw")
            image_features = self.encode_images(pixel_values, image_grid_thw)
        features = image_features.to(embeds.dtype)
        if features.shape[0] != n_image_tokens:
            raise ValueError(
                f"input_ids hold {n_image_tokens} image tokens, the images give {features.shape[0]} features"
            )
        return embeds.masked_scatter(is_image[..., None], features)

    def rope_index(self, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None) -> torch.Tensor:
        """(B, T) -> (3, B, T) M-RoPE positions (see echo.model.rope.rope_index)."""
        return rope_index(
            input_ids, image_grid_thw, self.config.image_token_id, self.config.vision.spatial_merge_size
        ).to(self.device)

    # ---- the network ----------------------------------------------------------------------------

    def hidden_states(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: KVCache | None = None,
        queries: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """The decoder without the head: (B, T, H) normed states, so training can apply lm_head
        to the positions that carry a loss only; with `queries` (K,), (B, K, H) at those positions,
        the last layer run there only (TextModel.forward)."""
        return self.model(
            inputs_embeds, position_ids.to(self.device), attention_mask, past_key_values, queries
        )

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """inputs_embeds (B, T, H), position_ids (3, B, T), attention_mask (B, T, past + T) bool with
        True = may attend (a (T, past + T) mask is broadcast), past_key_values per layer (k, v) each
        (B, n_kv_heads, past, head_dim) -> logits (B, T, V) and the per-layer (k, v) over past + T."""
        hidden, present = self.hidden_states(inputs_embeds, position_ids, attention_mask, past_key_values)
        return self.lm_head(hidden), present

    def logits_for(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of a whole sequence in one uncached pass; causal unless a mask is given."""
        embeds = self.embed(input_ids, pixel_values, image_grid_thw)
        positions = self.rope_index(input_ids, image_grid_thw)
        mask = causal_mask(input_ids.shape[1]) if attention_mask is None else attention_mask
        logits, _ = self(embeds, positions, mask.to(self.device))
        return logits
