"""Turn examples into model-ready batches: pixel patches, context ids and padded responses.

Every row of a batch shares one context length (the same image grid and prompt), so batches are
plain rectangles; responses are padded to a whole number of blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from echo.data.preprocess import PreprocessConfig, preprocess
from echo.decoding import build_context_ids
from echo.model.masks import response_prefix_len
from echo.tokenizer import ReportTokenizer
from echo.training.examples import ExampleSet, shape_groups


@dataclass
class Batch:
    pixel_values: torch.Tensor  # (b * n_patches, C*T*P*P) float32
    image_grid_thw: torch.Tensor  # (b, 3) long
    context_ids: torch.Tensor  # (b, C) long
    response_ids: torch.Tensor  # (b, R) long; whole blocks (see Batcher.make); padded with `pad_with`
    response_mask: torch.Tensor  # (b, R) bool; True on report tokens and the first eos
    indices: list[int]
    finding_targets: torch.Tensor | None = None  # (b, n_findings) from the reports, when asked for

    @property
    def size(self) -> int:
        return self.context_ids.shape[0]


class Batcher:
    """Makes batches from an ExampleSet for one tokenizer, prompt and preprocessing config."""

    def __init__(
        self,
        examples: ExampleSet,
        tokenizer: ReportTokenizer,
        prompt: str,
        preprocess_config: PreprocessConfig,
        block_size: int,
        max_response_tokens: int,
        finding_targets: torch.Tensor | None = None,
        prompt_attention: str = "causal",
    ) -> None:
        self.examples = examples
        self.prompt_attention = prompt_attention  # block_causal: responses end on an absolute block
        self.finding_targets = finding_targets  # (n, n_findings): one row per example
        self.tokenizer = tokenizer
        self.preprocess_config = preprocess_config
        self.block_size = block_size
        self.prompt_ids = tokenizer.encode(prompt)
        self.responses = [
            tokenizer.encode(report)[: max_response_tokens - 1] + [tokenizer.eos_id]
            for report in examples.reports
        ]

    def context(self, index: int) -> list[int]:
        """The context ids of one example: its image's token count depends on its grid; the
        prompt's image placeholder, if it has one (a chat prompt), says where the image goes."""
        height, width = self.examples.images[index].shape
        return build_context_ids(
            self.preprocess_config.num_image_tokens(height, width),
            self.prompt_ids,
            vision_start_id=self.tokenizer.vision_start_id,
            image_pad_id=self.tokenizer.image_pad_id,
            vision_end_id=self.tokenizer.vision_end_id,
        )

    def __len__(self) -> int:
        return len(self.examples)

    def pixels(self, index: int) -> tuple[np.ndarray, tuple[int, int, int]]:
        image = preprocess(self.examples.images[index].astype(np.float32) / 255.0, self.preprocess_config)
        return image.pixel_values, image.grid_thw

    def make(self, indices: Sequence[int], pad_with: int) -> Batch:
        shapes = {self.examples.images[i].shape for i in indices}
        assert len(shapes) == 1, f"one batch needs one image grid, got {sorted(shapes)}"
        patches, grids = zip(*(self.pixels(i) for i in indices), strict=True)
        context = self.context(indices[0])
        longest = max(len(self.responses[i]) for i in indices)
        # Whole blocks, as the decoders see them: counted from the response start ("causal"), or
        # from position 0, the context's last partial block opening the first one ("block_causal").
        prefix = response_prefix_len(len(context), self.block_size, self.prompt_attention)
        length = -(-(prefix + longest) // self.block_size) * self.block_size - prefix
        response = torch.full((len(indices), length), pad_with, dtype=torch.long)
        mask = torch.zeros((len(indices), length), dtype=torch.bool)
        for row, i in enumerate(indices):
            ids = self.responses[i]
            response[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = True
        return Batch(
            pixel_values=torch.from_numpy(np.concatenate(patches)).float(),
            image_grid_thw=torch.tensor(grids, dtype=torch.long),
            context_ids=torch.tensor([context] * len(indices), dtype=torch.long),
            response_ids=response,
            response_mask=mask,
            indices=list(indices),
            finding_targets=None if self.finding_targets is None else self.finding_targets[list(indices)],
        )

    def endless(self, batch_size: int, pad_with: int, seed: int) -> Iterator[Batch]:
        """Shuffled batches forever, each of one image grid (reproducible from the seed)."""
        generator = np.random.default_rng(seed)
        while True:
            order = generator.permutation(len(self)).tolist()
            chunks = [
                group[start : start + batch_size]
                for group in shape_groups(self.examples.images, order)
                for start in range(0, len(group), batch_size)
            ]
            for chunk in (chunks[i] for i in generator.permutation(len(chunks))):
                yield self.make(chunk, pad_with)

    def ordered(self, batch_size: int, pad_with: int) -> list[Batch]:
        return [
            self.make(group[start : start + batch_size], pad_with)
            for group in shape_groups(self.examples.images, range(len(self)))
            for start in range(0, len(group), batch_size)
        ]
