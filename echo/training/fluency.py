"""Fluency: the AR model's per-token negative log-likelihood of a draft, given the study's image.

The stage-1 model reads the image and the prompt, then scores every draft token (and the eos that
ends it) by next-token cross-entropy, as in its training. Broken text ("The is moderate pacemaker.
The mediastinal contours are..") costs many nats per token; the AR model's own greedy reports are
near its floor. Conditioning on the image, not on text alone, is what the AR model was trained for:
it also charges a draft for findings the image does not support, so read it next to F1, and
compare decoders on the same studies. Lower is better. Needs torch (the `train` extra); it lives
with the training code it reuses (batches, checkpoints), and `echo.metrics.evaluate` takes it as a
plain callable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echo.errors import UserError

BUNDLED_AR = Path(__file__).resolve().parents[1] / "assets" / "models" / "ar"
MAX_SCORED_TOKENS = 1024


@dataclass(frozen=True)
class Fluency:
    nll_per_token: float  # nats, token-weighted over all drafts, eos included
    tokens: int  # tokens scored
    reports: int
    model: str  # the AR checkpoint that scored them


class ArFluency:
    """A scorer: (study ids, drafts) -> Fluency, the images read from the manifest's studies."""

    def __init__(self, checkpoint: Path, manifest: Path, batch_size: int = 16) -> None:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UserError("the fluency score needs torch: install the train extra") from None
        from echo.data.manifest import read_manifest
        from echo.training.checkpoint import load_checkpoint

        if batch_size < 1:
            raise UserError("the fluency batch size must be positive")
        self.checkpoint = checkpoint
        self.model, self.tokenizer, self.spec = load_checkpoint(checkpoint)
        self.model.eval()
        self.root = manifest.parent
        self.rows = {row.id: row for row in read_manifest(manifest)}
        self.batch_size = batch_size
        self._images: dict[str, Any] = {}  # id -> image at the model's input size, read once

    def __call__(
        self,
        ids: Sequence[str],
        reports: Sequence[str],
        on_batch: Callable[[int], None] | None = None,
    ) -> Fluency:
        import torch
        import torch.nn.functional as F

        from echo.training.batches import Batcher
        from echo.training.checkpoint import preprocess_config_of

        if len(ids) != len(reports):
            raise ValueError(f"{len(ids)} ids but {len(reports)} reports")
        config = preprocess_config_of(self.model)
        batcher = Batcher(
            self._examples(ids, reports, config),
            self.tokenizer,
            self.spec.prompt,
            config,
            block_size=1,
            max_response_tokens=MAX_SCORED_TOKENS,
        )
        total, count = 0.0, 0
        with torch.inference_mode():
            for batch in batcher.ordered(self.batch_size, pad_with=self.tokenizer.pad_id):
                ids_in = torch.cat([batch.context_ids, batch.response_ids], dim=1)
                logits = self.model.logits_for(ids_in, batch.pixel_values, batch.image_grid_thw).float()
                predicted = logits[:, batch.context_ids.shape[1] - 1 : -1]  # position i predicts i + 1
                mask = batch.response_mask.to(predicted.device)
                targets = batch.response_ids.to(predicted.device)
                total += float(F.cross_entropy(predicted[mask], targets[mask], reduction="sum"))
                count += int(mask.sum())
                if on_batch is not None:
                    on_batch(batch.size)
        return Fluency(total / count if count else 0.0, count, len(reports), str(self.checkpoint))

    def _examples(self, ids: Sequence[str], reports: Sequence[str], config):
        from echo.data.preprocess import load_pixels, resize_to_grid
        from echo.training.examples import ExampleSet

        unknown = [identifier for identifier in ids if identifier not in self.rows]
        if unknown:
            raise UserError(f"fluency: study {unknown[0]!r} is not in the manifest")
        for i in ids:
            if i not in self._images:
                self._images[i] = resize_to_grid(load_pixels(self.rows[i].image_path(self.root)), config)
        images = [self._images[i] for i in ids]
        return ExampleSet(list(ids), list(reports), images, [{} for _ in ids])
