"""Writing one ONNX graph: torch.onnx (the dynamo exporter), readable dynamic axis names, checks.

The dynamo exporter is the maintained one (the TorchScript exporter is deprecated) and emits
plain opset >= 18 operators that onnxruntime's CPU, CUDA and TensorRT providers all implement.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch

from echo.errors import UserError

MIN_OPSET = 17
DEFAULT_OPSET = 18
_SYMBOL = re.compile(r"\b[su]\d+\b")  # the exporter's symbolic dims: s0, s12, ... (u for unbacked)


def supported_opsets() -> range:
    return range(MIN_OPSET, onnx.defs.onnx_opset_version() + 1)


def check_opset(opset: int) -> None:
    allowed = supported_opsets()
    if opset not in allowed:
        raise UserError(f"--opset must be between {allowed.start} and {allowed.stop - 1}, got {opset}")


def export_graph(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    dynamic_shapes: tuple[Any, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    axis_names: Mapping[str, Mapping[int, str]],
    path: Path,
    opset: int,
    external_data: bool = False,
) -> None:
    """Export `module` traced on `args` to `path` (plus `path`.data when over 2 GB, or always
    with `external_data`), name the dynamic axes of its inputs and outputs, and run onnx's full
    checker on the result."""
    with _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(
                module,
                args,
                dynamic_shapes=dynamic_shapes,
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=opset,
                dynamo=True,
                verbose=False,
                optimize=True,
            )
        except Exception as error:  # the exporter wraps every failure in its own types
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"ONNX export of {path.name} failed at opset {opset}: {first}") from None
        assert program is not None
        program.save(str(path), external_data=True if external_data else None)  # None: over 2 GB
    model = onnx.load(str(path), load_external_data=False)
    name_dynamic_axes(model, axis_names)
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise UserError(f"{path.name} fails the ONNX checker: {str(error).splitlines()[0]}") from None


def name_dynamic_axes(model: onnx.ModelProto, axis_names: Mapping[str, Mapping[int, str]]) -> None:
    """Replace the exporter's symbols (s10, s22 + s70) by names (batch, sequence + past) wherever
    they appear, given the names of some inputs' axes."""
    symbols: dict[str, str] = {}
    for value in model.graph.input:
        for axis, name in axis_names.get(value.name, {}).items():
            dim = value.type.tensor_type.shape.dim[axis]
            if dim.dim_param and _SYMBOL.fullmatch(dim.dim_param):
                symbols.setdefault(dim.dim_param, name)
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = _SYMBOL.sub(lambda m: symbols.get(m.group(0), m.group(0)), dim.dim_param)


@contextmanager
def _quiet_exporter():
    """The exporter warns about optional packages (torchvision) and deprecations on every call."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
