"""An image read and preprocessed once, with its vision features kept after its first decode.

The draft gate decodes one study's image up to three ways (the served decoding, then re-decodes);
`Engine.prepare(image)` returns a PreparedImage that `generate` / `generate_batch` accept in place
of the image, so the later decodes skip reading, preprocessing and the vision graph (the vision
tower runs once per image, which at a real model's pixel budget is most of a report's fixed cost).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from echo.data.preprocess import PreprocessedImage
from echo.runtime.session import PreparedContext


@dataclass(eq=False)
class PreparedImage:
    processed: PreprocessedImage
    preprocess_seconds: float
    # the context rows of this image decoded alone, set by its first single-image pass
    context: PreparedContext | None = None
    charged: bool = False  # its preprocessing time is in a report's timings already
    # its vision features, by the vision graph that computed them (the sha256 of its file): another
    # model whose vision graph is byte-identical (the student and its teacher) reuses them
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def for_another_model(self) -> PreparedImage:
        """The same pixels for another engine with the same preprocessing (the draft gate's re-decode
        model): not charged again, its own context rows, the vision features shared."""
        return PreparedImage(self.processed, 0.0, charged=True, features=self.features)

    def charge_preprocess(self) -> float:
        """The preprocessing seconds for the first report decoded from this image, 0 after."""
        seconds, self.charged = (0.0 if self.charged else self.preprocess_seconds), True
        return seconds

    def keep(self, context: PreparedContext) -> None:
        """Keep `context` for the next decode; its arrays become read-only, so a decoder that
        wrote into them (and would change the next decode) fails at once instead."""
        for array in (context.ids, context.embeds, context.positions):
            array.flags.writeable = False
        self.context = context
