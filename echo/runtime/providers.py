"""Which onnxruntime execution providers a session uses.

By default the fastest one this install offers: TensorRT, then CUDA, then the CPU. A caller may
name providers by their short names; for a one-off command (`echo-train predict --providers`) one
that is not available here is an error naming what is (`choose_providers`).

A worker reads the operator's choice from ECHO_ORT_PROVIDER (`choose_for_setting`) and is not
stopped by a missing GPU provider: a GPU host whose CUDA install broke keeps drafting on what is
left, and says so in a warning, never silently. onnxruntime itself may also drop a provider when it
opens the session (no GPU visible, a CUDA or cuDNN library missing); `session_fallback` turns the
difference between what was asked and what the session runs on into that warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from echo.errors import UserError

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERENCE: tuple[str, ...] = (TENSORRT, CUDA, CPU)
ALIASES: dict[str, str] = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
GPU_PROVIDERS: frozenset[str] = frozenset({TENSORRT, CUDA})
AUTO = "auto"  # ECHO_ORT_PROVIDER's default: the best this install offers


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


def short_name(provider: str) -> str:
    """ "CUDAExecutionProvider" -> "CUDA": how logs and the ready line name a provider."""
    return provider.removesuffix("ExecutionProvider")


def check_provider_setting(text: str) -> str:
    """ECHO_ORT_PROVIDER normalised: "auto", or known provider names comma-separated, best first.
    A name onnxruntime does not know is refused here, at start (a typo is not a fall-back)."""
    if text.strip().lower() in ("", AUTO):
        return AUTO
    return ",".join(short_name(name).lower() for name in parse_providers(text))


@dataclass(frozen=True)
class ProviderChoice:
    setting: str  # ECHO_ORT_PROVIDER as given
    providers: list[str]  # for Engine.load: best first, the CPU last
    available: list[str]  # what this onnxruntime offers
    fallback: str | None = None  # why `providers` is not what the setting asked for (a warning)

    def summary(self) -> str:
        """One line for the start-up log."""
        return (
            f"onnxruntime providers: {', '.join(map(short_name, self.providers))} "
            f"(ECHO_ORT_PROVIDER={self.setting}; this install offers {', '.join(map(short_name, self.available))})"
        )


def choose_for_setting(setting: str, available: Sequence[str]) -> ProviderChoice:
    """The providers a worker opens its sessions with, for ECHO_ORT_PROVIDER = `setting`.

    "auto": the best available (`choose_providers`). Names: those this onnxruntime offers, in the
    order given, the CPU last; the ones it lacks are left out with a warning naming them (the CPU
    alone when none is left) instead of refusing to start."""
    normal = check_provider_setting(setting)
    if normal == AUTO:
        return ProviderChoice(AUTO, choose_providers(None, available), list(available))
    asked = parse_providers(normal)
    missing = [name for name in asked if name not in available]
    chosen = choose_providers([name for name in asked if name in available] or [CPU], available)
    fallback = None
    if missing:
        fallback = (
            f"ECHO_ORT_PROVIDER={normal}: this onnxruntime has no {', '.join(map(short_name, missing))} "
            f"(it offers {', '.join(map(short_name, available))}); running on {short_name(chosen[0])}"
            + (" (slow: install onnxruntime-gpu and the CUDA libraries)" if chosen[0] == CPU else "")
        )
    return ProviderChoice(normal, chosen, list(available), fallback)


def provider_choice(setting: str) -> ProviderChoice:
    """`choose_for_setting` against what the installed onnxruntime offers."""
    import onnxruntime as ort

    return choose_for_setting(setting, ort.get_available_providers())


def session_fallback(asked: Sequence[str], in_use: Sequence[str]) -> str | None:
    """The warning when the session does not run on the first provider asked for (onnxruntime
    dropped it while opening the session: no GPU visible, a CUDA/cuDNN/TensorRT library missing;
    its own message is printed just before), else None."""
    if not asked or not in_use or in_use[0] == asked[0]:
        return None
    return (
        f"onnxruntime could not start {short_name(asked[0])} and runs the model on {short_name(in_use[0])}"
        + (" (slow)" if in_use[0] == CPU else "")
        + ": check the GPU is visible (nvidia-smi) and the CUDA libraries match onnxruntime-gpu"
    )
