"""The ECHO vision-language model: a Qwen2.5-VL-compatible network, its config and attention masks.

Importing this package imports torch; the node and the ONNX runtime engine never do.
"""

from echo.model.config import EchoVLConfig
from echo.model.masks import block_causal_mask, causal_mask, full_duplication_mask, rad_training_mask
from echo.model.rope import continue_positions
from echo.model.text import KVCache
from echo.model.vision_config import VisionConfig
from echo.model.vlm import EchoVLM

__all__ = [
    "EchoVLConfig",
    "EchoVLM",
    "KVCache",
    "VisionConfig",
    "block_causal_mask",
    "causal_mask",
    "continue_positions",
    "full_duplication_mask",
    "rad_training_mask",
]
