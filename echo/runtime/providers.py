"""Which onnxruntime execution providers a session uses.

By default the fastest one this install offers: TensorRT, then CUDA, then the CPU. An operator's
choice (e.g. the `ECHO_PROVIDERS` setting, parsed by the caller and passed in) may name providers
by their short names; one that is not available here is an error naming what is, rather than a
silent fall-back to the CPU that would make a GPU node a hundred times slower without saying so.
"""

from __future__ import annotations

from collections.abc import Sequence

from echo.errors import UserError

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERENCE: tuple[str, ...] = (TENSORRT, CUDA, CPU)
ALIASES: dict[str, str] = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
GPU_PROVIDERS: frozenset[str] = frozenset({TENSORRT, CUDA})


def parse_providers(text: str) -> list[str]:
    """ "tensorrt,cuda,cpu" -> full provider names, in order (unknown names are an error)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("no execution provider named (expected e.g. 'cuda,cpu')")
    return [_full_name(name) for name in names]


def choose_providers(requested: Sequence[str] | str | None, available: Sequence[str]) -> list[str]:
    """The providers to create sessions with, best first, the CPU always last as the fall-back
    for operators a GPU provider does not implement."""
    if requested is None:
        chosen = [name for name in PREFERENCE if name in available]
    else:
        chosen = (
            parse_providers(requested) if isinstance(requested, str) else [_full_name(n) for n in requested]
        )
        if not chosen:
            raise UserError("no execution provider named (expected e.g. 'cuda,cpu')")
        absent = [name for name in chosen if name not in available]
        if absent:
            raise UserError(
                f"execution provider {', '.join(absent)} is not available in this onnxruntime "
                f"(available: {', '.join(available)})"
            )
    chosen = list(dict.fromkeys(chosen))
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def _full_name(name: str) -> str:
    if name in PREFERENCE or name.endswith("ExecutionProvider"):
        return name
    try:
        return ALIASES[name.lower()]
    except KeyError:
        raise UserError(
            f"unknown execution provider {name!r} (choose from {', '.join(ALIASES)} or a full onnxruntime name)"
        ) from None
