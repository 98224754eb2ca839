"""`manifest.json`: what an exported model directory holds and how to run it.

The exporter writes it beside the graphs; the engine reads nothing else to know the model. Every
file it names carries a sha256, checked on load, so a truncated copy or a graph from another
export is refused with a message instead of producing a wrong report. The model version is a
content hash (files + how to generate), so the same export always has the same version and any
change gives a new one: reports are traceable to the exact model that wrote them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from echo.decodings import DECODES, DEFAULT_REFINE_THRESHOLD
from echo.errors import UserError

MANIFEST_NAME = "manifest.json"
FORMAT = "echo-onnx/1"  # bump when the graphs' interface changes
VISION_GRAPH = "vision.onnx"
DECODER_GRAPH = "decoder.onnx"
EMBEDDINGS_FILE = "embeddings.npy"
TOKENIZER_FILE = "tokenizer.json"
DTYPES: tuple[str, ...] = ("float32", "float16")
QUANTIZATIONS: tuple[str | None, ...] = (None, "int8-dynamic")

VISION_INPUTS: tuple[str, ...] = (
    "pixel_values",
    "patch_positions",
    "window_index",
    "restore_index",
    "window_slots",
    "window_places",
    "frame_slots",
    "frame_places",
)
# Vision graphs exported before the slot tables (dense (N, N) masks inside): still served.
DENSE_VISION_INPUTS: tuple[str, ...] = (*VISION_INPUTS[:4], "window_segments", "frame_segments")
VISION_OUTPUTS: tuple[str, ...] = ("image_features",)
# logits (B, K, V) at logits_positions; top_ids / top_probs (B, K): argmax and its softmax probability with the mask token excluded, computed in
# the graph so a decoding step never copies (B, T, vocab) logits off the device.
DECODER_HEAD_OUTPUTS: tuple[str, ...] = ("logits", "top_ids", "top_probs")


def decoder_input_names(num_layers: int) -> list[str]:
    # logits_positions (K,) int64: the positions whose logits / argmax are computed (decoding reads
    # only the window or the last position; the head over a whole prefill would be wasted work).
    names = ["inputs_embeds", "position_ids", "attention_mask", "logits_positions"]
    for i in range(num_layers):
        names += [f"past_key_{i}", f"past_value_{i}"]
    return names


def decoder_output_names(num_layers: int) -> list[str]:
    names = list(DECODER_HEAD_OUTPUTS)
    for i in range(num_layers):
        names += [f"present_key_{i}", f"present_value_{i}"]
    return names


@dataclass(frozen=True)
class TokenIds:
    mask: int | None  # None: an AR model without a mask token (it can only decode "ar")
    eos: int
    pad: int | None
    image: int
    vision_start: int
    vision_end: int


@dataclass(frozen=True)
class Generation:
    decode: str  # the decoding the model serves: ar | multistep | onestep | refine
    prompt: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    threshold: float  # multistep low_confidence_dynamic tau
    block_size: int
    prompt_attention: str  # causal | block_causal (where response blocks start counting)
    stage: str  # ar | rad | dcd: the training stage that wrote the checkpoint
    # refine: a block's positions below this confidence are re-predicted in one more forward
    refine_threshold: float = DEFAULT_REFINE_THRESHOLD


@dataclass(frozen=True)
class VisionGeometry:
    patch_size: int
    temporal_patch_size: int
    merge_size: int
    window_patches: int  # window side in patches (window_size // patch_size)
    patch_dim: int  # length of a pixel_values row


@dataclass(frozen=True)
class TextGeometry:
    hidden_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int


@dataclass(frozen=True)
class ModelManifest:
    name: str
    version: str
    dtype: str  # float32 | float16: the graphs' floating-point inputs and outputs
    opset: int
    tokens: TokenIds
    generation: Generation
    vision: VisionGeometry
    text: TextGeometry
    preprocess: dict[str, Any]  # echo.data.preprocess.PreprocessConfig as a dict
    files: dict[
        str, str
    ]  # file name in the directory -> sha256 (graphs, external data, embeddings, tokenizer)
    source: dict[str, Any] = field(
        default_factory=dict
    )  # checkpoint path, its weights' sha256, exporter versions
    format: str = FORMAT
    # None: the graphs compute in `dtype`; "int8-dynamic": the decoder's matrix products use int8
    # weights (per channel) and int8 activations quantised at run time (echo.export.quantize)
    quantization: str | None = None
    # a subdirectory holding a second export (the multi-step teacher) that the draft gate re-decodes
    # a failed draft with; its manifest.json is in `files`, so this version covers its graphs too
    redecode: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        for optional in ("quantization", "redecode"):  # absent: the manifest reads as it always has
            if data[optional] is None:
                del data[optional]
        return json.dumps(data, indent=2) + "\n"

    @property
    def redecode_manifest(self) -> str | None:
        """The `files` entry of the re-decode model's manifest ("redecode/manifest.json")."""
        return None if self.redecode is None else f"{self.redecode}/{MANIFEST_NAME}"

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> ModelManifest:
        try:
            if data.get("format") != FORMAT:
                raise UserError(f"{origin}: format {data.get('format')!r} is not {FORMAT!r}")
            generation = dict(data["generation"])
            generation["prompt_ids"] = tuple(int(i) for i in generation["prompt_ids"])
            manifest = cls(
                name=str(data["name"]),
                version=str(data["version"]),
                dtype=str(data["dtype"]),
                opset=int(data["opset"]),
                tokens=TokenIds(**data["tokens"]),
                generation=Generation(**generation),
                vision=VisionGeometry(**data["vision"]),
                text=TextGeometry(**data["text"]),
                preprocess=dict(data["preprocess"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                source=dict(data.get("source") or {}),
                quantization=data.get("quantization"),
                redecode=data.get("redecode"),
            )
        except KeyError as error:
            raise UserError(f"{origin}: missing field {error}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise UserError(f"{origin}: malformed ({error})") from None
        manifest.check(origin)
        return manifest

    def check(self, origin: str) -> None:
        """Values the engine relies on; a hand-edited manifest fails here, not mid-report."""
        problems = []
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.quantization not in QUANTIZATIONS:
            problems.append(
                f"quantization {self.quantization!r} is not one of {', '.join(map(str, QUANTIZATIONS))}"
            )
        if self.quantization is not None and self.dtype != "float32":
            problems.append(f"quantization {self.quantization!r} needs float32 graphs, not {self.dtype}")
        if self.generation.decode not in DECODES:
            problems.append(f"decode {self.generation.decode!r} is not one of {', '.join(DECODES)}")
        if self.generation.decode != "ar" and self.tokens.mask is None:
            problems.append(f"decode {self.generation.decode!r} needs a mask token id")
        if self.generation.block_size < 1 or self.generation.max_new_tokens < 1:
            problems.append("block_size and max_new_tokens must be >= 1")
        if not 0.0 <= self.generation.threshold <= 1.0:
            problems.append(f"threshold {self.generation.threshold} is outside [0, 1]")
        if not 0.0 <= self.generation.refine_threshold <= 1.0:
            problems.append(f"refine_threshold {self.generation.refine_threshold} is outside [0, 1]")
        if self.generation.prompt_attention not in ("causal", "block_causal"):
            problems.append(
                f"prompt_attention {self.generation.prompt_attention!r} is not causal or block_causal"
            )
        if self.redecode is not None:
            if not self.redecode or Path(self.redecode).name != self.redecode or self.redecode in (".", ".."):
                problems.append(f"redecode {self.redecode!r} is not a subdirectory name")
            elif self.redecode_manifest not in self.files:
                problems.append(f"files does not list {self.redecode_manifest}")
        for required in (VISION_GRAPH, DECODER_GRAPH, EMBEDDINGS_FILE, TOKENIZER_FILE):
            if required not in self.files:
                problems.append(f"files does not list {required}")
        if problems:
            raise UserError(f"{origin}: {'; '.join(problems)}")


def check_redecode_pair(served: ModelManifest, redecode: ModelManifest, origin: str) -> None:
    """The re-decode model must read the same image input and write with the same tokens (the gate
    hands it the served model's preprocessed image, and its draft goes out as the served one's)."""
    problems = []
    if redecode.preprocess != served.preprocess:
        problems.append("its image preprocessing differs from the served model's")
    if redecode.files.get(TOKENIZER_FILE) != served.files.get(TOKENIZER_FILE):
        problems.append("its tokenizer differs from the served model's")
    if redecode.redecode is not None:
        problems.append("it has a re-decode model of its own")
    if problems:
        raise UserError(f"{origin}: cannot re-decode for {served.name}: {'; '.join(problems)}")


def content_version(files: dict[str, str], described: dict[str, Any]) -> str:
    """16 hex digits of sha256 over the files' checksums and the generation settings."""
    payload = json.dumps({"files": files, "described": described}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(model_dir: str | Path, verify: bool = True) -> ModelManifest:
    """Read DIR/manifest.json; with `verify`, every listed file must exist with its sha256."""
    directory = Path(model_dir)
    if not directory.is_dir():
        raise UserError(f"model directory {directory} does not exist")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise UserError(
            f"{directory} is not an exported model directory (no {MANIFEST_NAME}); run `echo-train export`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot read JSON ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    manifest = ModelManifest.from_dict(data, str(path))
    missing = sorted(name for name in manifest.files if not (directory / name).is_file())
    if missing:
        raise UserError(
            f"{directory}: missing {', '.join(missing)} (listed in {MANIFEST_NAME}); re-export the model"
        )
    if verify:
        for name, expected in sorted(manifest.files.items()):
            if sha256_of(directory / name) != expected:
                raise UserError(
                    f"{directory / name}: checksum mismatch (the file differs from the exported one); re-export the model"
                )
    return manifest
