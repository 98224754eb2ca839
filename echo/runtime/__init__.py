"""The onnxruntime engine: runs an exported model directory (see echo.export) on CPU, CUDA or
TensorRT. Nothing on this path imports torch; the node and the workers install without it.

The names below are imported on first use (PEP 562), so a module that needs only
`echo.runtime.manifest` (the admin commands, the status page) does not pay for onnxruntime."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from echo.runtime.engine import DecodeOptions, Engine
    from echo.runtime.manifest import ModelManifest, load_manifest
    from echo.runtime.providers import choose_providers, parse_providers
    from echo.runtime.result import GeneratedReport

_HOMES = {
    "DecodeOptions": "echo.runtime.engine",
    "Engine": "echo.runtime.engine",
    "GeneratedReport": "echo.runtime.result",
    "ModelManifest": "echo.runtime.manifest",
    "choose_providers": "echo.runtime.providers",
    "load_manifest": "echo.runtime.manifest",
    "parse_providers": "echo.runtime.providers",
}

__all__ = [
    "DecodeOptions",
    "Engine",
    "GeneratedReport",
    "ModelManifest",
    "choose_providers",
    "load_manifest",
    "parse_providers",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'echo.runtime' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value
