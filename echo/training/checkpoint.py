"""Checkpoint directories: HF-format model files plus the tokenizer and how to generate.

A checkpoint directory holds ``config.json`` + ``model.safetensors`` (Qwen2.5-VL format, see
`echo.model`), ``tokenizer.json`` and ``echo_generation.json`` — the prompt, the decoding the stage
was trained for and the response budget — so every consumer (predict, export, the engine) reads one
place instead of being told twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from echo.decodings import DEFAULT_REFINE_THRESHOLD
from echo.errors import UserError

if TYPE_CHECKING:
    from echo.data.preprocess import PreprocessConfig

GENERATION_FILE = "echo_generation.json"
DEFAULT_PROMPT = "Chest radiograph report:"


@dataclass(frozen=True)
class GenerationSpec:
    # The text the model reads around the image. Plain text (the demo models) follows the image; a
    # chat-templated prompt (`echo-train init-from`) holds one <|vision_start|><|image_pad|>
    # <|vision_end|> placeholder where the image goes (see echo.chat).
    prompt: str = DEFAULT_PROMPT
    stage: str = "ar"  # ar | rad | dcd: which training stage wrote the checkpoint
    decode: str = "ar"  # the decoding the stage serves: ar | multistep | onestep | refine
    max_new_tokens: int = 192
    threshold: float = 0.85  # low_confidence_dynamic's tau for multistep decoding
    # refine: positions below this confidence are re-predicted in a second forward of their block
    refine_threshold: float = DEFAULT_REFINE_THRESHOLD

    def threshold_for(self, decode: str) -> float:
        """The threshold `decode` takes from this spec: refine's own, else the multistep tau."""
        return self.refine_threshold if decode == "refine" else self.threshold

    def save(self, directory: Path) -> None:
        (directory / GENERATION_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> GenerationSpec:
        path = directory / GENERATION_FILE
        if not path.is_file():
            return cls()
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise UserError(f"{path} is not a valid generation spec: {error}") from None


def require_checkpoint(directory: Path) -> Path:
    if not (directory / "config.json").is_file():
        raise UserError(f"{directory} is not a checkpoint directory (no config.json)")
    return directory


def load_checkpoint(directory: Path, dtype=None):
    """(model, tokenizer, spec) from a checkpoint directory; errors are one line. The weights are
    float32 unless `dtype` says otherwise (scale.weights_dtype: a frozen or LoRA base in bf16)."""
    from echo.model import EchoVLM
    from echo.tokenizer import ReportTokenizer

    require_checkpoint(directory)
    if not (directory / "tokenizer.json").is_file():
        raise UserError(f"{directory} has no tokenizer.json")
    model = EchoVLM.from_pretrained(directory) if dtype is None else EchoVLM.from_pretrained(directory, dtype)
    tokenizer = ReportTokenizer.from_dir(directory)
    return model, tokenizer, GenerationSpec.load(directory)


def save_checkpoint(model, tokenizer, spec: GenerationSpec, directory: Path) -> None:
    """A model trained with LoRA adapters is saved merged: a plain Qwen2.5-VL checkpoint."""
    from echo.training.scale import plain_model

    directory.mkdir(parents=True, exist_ok=True)
    plain_model(model).save_pretrained(directory)
    tokenizer.save(directory)
    spec.save(directory)


def preprocess_config_of(model) -> PreprocessConfig:
    """How a checkpoint's images are preprocessed: the model config's 'preprocess' section."""
    from echo.data.preprocess import PreprocessConfig

    raw = getattr(model.config, "preprocess", None)
    if not raw:
        raise UserError("the model config has no 'preprocess' section (min_pixels, max_pixels, ...)")
    return PreprocessConfig.from_dict(raw) if isinstance(raw, dict) else raw
