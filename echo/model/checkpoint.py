"""Reading and writing the weights of a checkpoint directory (safetensors, single or sharded).

On disk, Qwen2.5-VL checkpoints name weights "visual.*", "model.*" (the decoder) and "lm_head.*",
which are our module names. transformers >= 4.52 names them "model.visual.*" and
"model.language_model.*" in memory (and in files written straight from its state_dict); both are
accepted and mapped to the on-disk names, which is also what we write.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from echo.errors import UserError

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# (prefix transformers uses in memory, prefix on disk)
_IN_MEMORY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.visual.", "visual."),
    ("model.language_model.", "model."),
)


def canonical_name(name: str) -> str:
    """A weight's on-disk name, whichever of the two naming schemes it came in."""
    for in_memory, on_disk in _IN_MEMORY_PREFIXES:
        if name.startswith(in_memory):
            return on_disk + name[len(in_memory) :]
    return name


def weight_files(directory: Path) -> list[Path]:
    """The sharded index's files if there is an index, else every *.safetensors in the directory."""
    index_path = directory / WEIGHTS_INDEX_NAME
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise UserError(f"{index_path}: not a safetensors index ({error})") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [str(f.name) for f in files if not f.is_file()]
        if missing:
            raise UserError(
                f"{directory}: shards named in {WEIGHTS_INDEX_NAME} are missing: {', '.join(missing)}"
            )
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise UserError(f"{directory}: no *.safetensors weights")
    return files


def read_weights(directory: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint under their on-disk names; a name given twice is an error."""
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for path in weight_files(directory):
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    key = canonical_name(name)
                    if key in tensors:
                        raise UserError(
                            f"{directory}: weight {key!r} appears in both {origin[key]} and {path.name}"
                        )
                    tensors[key] = handle.get_tensor(name)
                    origin[key] = path.name
        except (SafetensorError, OSError) as error:
            raise UserError(f"{path}: cannot read safetensors ({error})") from None
    return tensors


def write_weights(tensors: dict[str, torch.Tensor], directory: Path) -> Path:
    """Write model.safetensors atomically (a crash leaves the old file or none, never half of one)."""
    target = directory / WEIGHTS_NAME
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(target)
    return target


def describe_names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"
