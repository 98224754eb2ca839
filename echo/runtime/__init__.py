"""The onnxruntime engine: runs an exported model directory (see echo.export) on CPU, CUDA or
TensorRT. Nothing on this path imports torch; the node and the workers install without it."""

from echo.runtime.engine import DecodeOptions, Engine
from echo.runtime.manifest import ModelManifest, load_manifest
from echo.runtime.providers import choose_providers, parse_providers
from echo.runtime.result import GeneratedReport

__all__ = [
    "DecodeOptions",
    "Engine",
    "GeneratedReport",
    "ModelManifest",
    "choose_providers",
    "load_manifest",
    "parse_providers",
]
