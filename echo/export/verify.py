"""Does an exported model directory still match its checkpoint? (The bundled model's guard.)

Export the checkpoint afresh with the same settings and compare: the manifests (all but where the
checkpoint lay) and every file's sha256. The export is deterministic, so equal bytes are the
expected case; graphs whose bytes differ (another torch or onnx version) count as matching when
their outputs agree on random inputs within the parity tolerance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from echo.export.exporter import export_checkpoint
from echo.export.parity import TOLERANCE, DecoderCase, cpu_session, decoder_error, vision_error
from echo.runtime.kv_cache import PREFIX_GRAPH
from echo.runtime.manifest import DECODER_GRAPH, VISION_GRAPH, load_manifest
from echo.training.checkpoint import load_checkpoint

# Manifest fields that legitimately differ between exports of one checkpoint.
_UNCOMPARED = ("files", "version", "source")
# Files a fresh export adds that an older export may lack: built from the text geometry alone (no
# weights), and the engine serves an export without them (its KV cache then stays on the host).
_ADDED_SINCE = (PREFIX_GRAPH,)


def fresh_export_differences(
    model_dir: Path, checkpoint: Path, scratch: Path, redecode_checkpoint: Path | None = None
) -> list[str]:
    """What differs between `model_dir` and a fresh export of `checkpoint` (empty: they match).
    `scratch` is a directory the fresh export may be written into (it is removed afterwards). An
    export with a re-decode model is exported afresh with `redecode_checkpoint` and compared too."""
    existing = load_manifest(model_dir)
    if existing.redecode is not None and redecode_checkpoint is None:
        return [f"{existing.redecode}/: a re-decode model; its checkpoint is needed to compare it"]
    target = scratch / "fresh-export"
    try:
        export_checkpoint(
            checkpoint,
            target,
            fp16=existing.dtype == "float16",
            int8=existing.quantization is not None,
            opset=existing.opset,
            name=existing.name,
            force=True,
            external_data=_external_data(existing.files),
            redecode=redecode_checkpoint if existing.redecode is not None else None,
        )
        return compare_exports(model_dir, target, checkpoint, redecode_checkpoint)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _external_data(files: dict[str, str]) -> str:
    """ "always" when every graph's weights lie beside it (forced, or all over 2 GB: the same files)."""
    graphs = (VISION_GRAPH, DECODER_GRAPH)
    return "always" if all(f"{graph}.data" in files for graph in graphs) else "auto"


def compare_exports(
    model_dir: Path, fresh_dir: Path, checkpoint: Path, redecode_checkpoint: Path | None = None
) -> list[str]:
    """Differences between two exports of `checkpoint`: manifest fields (bar files, version and
    source) and files; a graph whose bytes differ counts only if its outputs disagree with the
    checkpoint beyond the parity tolerance. Re-decode models are compared the same way, against
    `redecode_checkpoint`."""
    existing, fresh = load_manifest(model_dir), load_manifest(fresh_dir)
    differences = _manifest_differences(_read(model_dir), _read(fresh_dir))
    for name in sorted(set(existing.files) | set(fresh.files)):
        if existing.files.get(name) == fresh.files.get(name):
            continue
        if name == existing.redecode_manifest == fresh.redecode_manifest and redecode_checkpoint:
            nested = compare_exports(
                model_dir / existing.redecode, fresh_dir / existing.redecode, redecode_checkpoint
            )
            differences += [f"{existing.redecode}/{difference}" for difference in nested]
            continue
        if name in (VISION_GRAPH, DECODER_GRAPH) and name in existing.files and name in fresh.files:
            error = _graph_error(model_dir / name, checkpoint, name)
            if error > TOLERANCE[existing.quantization or existing.dtype]:
                differences.append(f"{name}: outputs differ from a fresh export (relative error {error:.2e})")
        elif name not in existing.files:
            if name not in _ADDED_SINCE:
                differences.append(f"{name}: missing (a fresh export has it)")
        elif name not in fresh.files:
            differences.append(f"{name}: not in a fresh export")
        else:
            differences.append(f"{name}: differs from a fresh export")
    return differences


def _graph_error(path: Path, checkpoint: Path, name: str) -> float:
    model, _, _ = load_checkpoint(checkpoint)
    session = cpu_session(path)
    if name == VISION_GRAPH:
        return vision_error(model, session, [(1, 6, 8)], seed=11)
    return decoder_error(model, session, DecoderCase(batch=2, length=9, past=5), seed=12)


def _read(directory: Path) -> dict[str, Any]:
    """The manifest as the engine reads it: a field an older export lacks takes its default
    (a manifest written before `refine_threshold` existed still matches a fresh export)."""
    return json.loads(load_manifest(directory, verify=False).to_json())


def _manifest_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in _UNCOMPARED and old.get(key) != new.get(key):
            out.append(f"manifest {key}: {old.get(key)!r} != fresh {new.get(key)!r}")
    return out
