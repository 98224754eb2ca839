"""What a stage needs to run at scale: device placement, bf16 autocast, gradient checkpointing,
LoRA adapters (peft) and the peak memory it took.

LoRA adapters are injected in place into the decoder's linear layers (peft's
`inject_adapter_in_model`, the mechanism `get_peft_model` uses, without its wrapper), so the stage
code keeps calling the same EchoVLM. Only adapters train; the checkpoints written are the merged
model in plain Qwen2.5-VL format (`plain_model`), so export and the engine need nothing new, and
`out/last/trainer.pt` keeps the adapters for a resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
from typing import Any

import torch

from echo.errors import UserError
from echo.model.vlm import LORA_MASK_ROW as MASK_ROW
from echo.model.vlm import TIED_EMBEDDING

PRECISIONS = ("fp32", "bf16")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ADAPTER = "default"


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> a device that exists; a UserError otherwise."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be cpu, cuda or cuda:N, not {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu, cuda or cuda:N, not {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this torch has no CUDA (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast on `device` for 'bf16'; nothing for 'fp32' (the weights stay as they are)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(item: Any, device: torch.device) -> Any:
    """Tensors in `item` (a tensor, dataclass, tuple or list of them, nested) moved to `device`."""
    if isinstance(item, torch.Tensor):
        return item.to(device, non_blocking=True)
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        moved = {f.name: to_device(getattr(item, f.name), device) for f in dataclasses.fields(item)}
        return dataclasses.replace(item, **moved)
    if isinstance(item, tuple | list):
        return type(item)(to_device(x, device) for x in item)
    return item


def parse_lora_targets(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(DEFAULT_LORA_TARGETS))
    if not names or unknown:
        raise UserError(
            f"--lora-targets takes a comma-separated list of {', '.join(DEFAULT_LORA_TARGETS)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return names


def add_lora(model, rank: int, alpha: float, targets: tuple[str, ...]) -> int:
    """Inject LoRA adapters into the decoder's `targets` linear layers (never the vision tower) and
    freeze everything else; returns the number of trainable parameters."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise UserError("--lora-rank needs peft: pip install 'echo-node[train]'") from None
    if rank < 1:
        raise UserError(f"--lora-rank must be >= 1, got {rank}")
    pattern = r"model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(targets) + ")"
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=pattern, bias="none")
    inject_adapter_in_model(config, model, adapter_name=_ADAPTER)
    if model.config.mask_token_id is not None:
        # The embeddings stay frozen under LoRA, but <|MASK|> is the token block diffusion adds
        # (init-from starts its row at the mean): its row trains as one more adapter, merged back
        # into the embedding when the checkpoint is saved (plain_model).
        row = model.model.embed_tokens.weight[model.config.mask_token_id].detach().float().clone()
        model.register_parameter(MASK_ROW, torch.nn.Parameter(row))
    trainable = 0
    for name, parameter in model.named_parameters():
        is_adapter = "lora_" in name
        parameter.requires_grad_(is_adapter)
        if is_adapter:
            parameter.data = parameter.data.float()  # fp32 adapters over a bf16 base
            trainable += parameter.numel()
    return trainable


def prepare_model(model, loop) -> dict[str, Any]:
    """Apply a LoopConfig's scale options to a model about to train: gradient checkpointing, LoRA
    (on a bf16 base when precision is bf16) and the device. Returns what to add to metrics.json."""
    device = resolve_device(loop.device)
    model.gradient_checkpointing_enable(loop.gradient_checkpointing)
    info: dict[str, Any] = {}
    if loop.lora_rank > 0:
        if loop.precision == "bf16":
            model.to(torch.bfloat16)  # the frozen base in bf16; the adapters stay fp32
        alpha = loop.lora_alpha or 2.0 * loop.lora_rank
        info["lora_trainable_parameters"] = add_lora(model, loop.lora_rank, alpha, tuple(loop.lora_targets))
    model.to(device)
    return info


def weights_dtype(loop, trains: bool) -> torch.dtype:
    """The dtype to load a checkpoint in: bf16 for a model that only runs (DCD's teacher) or a
    LoRA base under --precision bf16 (half the host memory of loading float32 and casting);
    float32 for weights AdamW updates (fp32 master weights)."""
    bf16 = loop.precision == "bf16" and (not trains or loop.lora_rank > 0)
    return torch.bfloat16 if bf16 else torch.float32


def prepare_frozen(model, loop):
    """A model that only runs (DCD's teacher): on the device, in bf16 when precision is bf16."""
    device = resolve_device(loop.device)
    return model.to(device=device, dtype=torch.bfloat16) if loop.precision == "bf16" else model.to(device)


def has_lora(model) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def plain_model(model):
    """`model` itself, or with LoRA a model sharing its weights whose adapted layers hold the
    merged weights W + scale * B A: the plain Qwen2.5-VL checkpoint to save."""
    if not has_lora(model):
        return model
    from peft.tuners.lora import LoraLayer

    merged: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            delta = module.get_delta_weight(_ADAPTER).to(base.weight.dtype)
            merged[f"{name}.weight"] = (base.weight + delta).detach()
            if base.bias is not None:
                merged[f"{name}.bias"] = base.bias.detach()
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        plain = name.replace(".base_layer.", ".")
        merged.setdefault(plain, tensor)
    mask_row = getattr(model, MASK_ROW, None)
    if mask_row is not None:
        embedding = merged[TIED_EMBEDDING].clone()
        embedding[model.config.mask_token_id] = mask_row.detach().to(embedding.dtype)
        merged[TIED_EMBEDDING] = embedding
    with torch.device("meta"):
        clone = type(model)(model.config)
    if getattr(model.config, "tie_word_embeddings", False):
        merged.pop("lm_head.weight", None)
    result = clone.load_state_dict(merged, strict=False, assign=True)
    assert set(result.missing_keys) <= {"lm_head.weight"}, f"merge lost {result.missing_keys}"
    if getattr(model.config, "tie_word_embeddings", False):
        clone.lm_head.weight = clone.model.embed_tokens.weight
    return clone


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters that train (with LoRA: the adapters), for a resume that keeps the base."""
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def peak_memory(device: torch.device | None = None) -> dict[str, float | None]:
    """Peak resident memory of this process (ru_maxrss) and, on CUDA, peak allocated tensors, MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.max_memory_allocated(device) / 2**20
    return {"peak_rss_mib": round(rss_mib, 1), "peak_cuda_mib": None if cuda is None else round(cuda, 1)}
