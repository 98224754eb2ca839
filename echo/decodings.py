"""The decodings a model can serve, and their defaults, shared by the torch decoders
(echo.decoding), the checkpoints' generation spec (echo.training) and the onnxruntime engine
(echo.runtime) without importing any of them."""

from __future__ import annotations

DECODES: tuple[str, ...] = ("ar", "multistep", "onestep", "refine")

# refine: a block's positions below this confidence are re-predicted in one more forward. Of
# 0.1 ... 0.95, the bundled student's best positive-finding F1 on the 382 validation studies
# (0.604 at 4.50 tokens per forward; one step per block: 0.533 at 7.38). Also the value of a
# manifest written before refine existed.
DEFAULT_REFINE_THRESHOLD = 0.5
