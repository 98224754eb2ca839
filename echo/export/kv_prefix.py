"""`kv_prefix.onnx`: the first `end` positions of every past key / value, computed where they lie.

The engine keeps the decoder's KV cache on the session's device (echo.runtime.kv_cache.DeviceKVCache);
a block step keeps only a prefix of its present tensors, and onnxruntime's Python API cannot slice
a device tensor, so this graph does it: one Slice per tensor, run on the decoder's provider. It
depends only on the text geometry (no weights), so it is written from the manifest's numbers.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from echo.runtime.kv_cache import PREFIX_INPUTS, prefix_names

_ONNX_DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def write_kv_prefix_graph(
    path: Path, num_layers: int, kv_heads: int, head_dim: int, dtype: str, opset: int
) -> None:
    """inputs: end (1,) int64, kv_0 .. kv_{2L-1} (batch, kv_heads, length, head_dim);
    outputs: prefix_0 .. (batch, kv_heads, end, head_dim), each a copy of kv_i[:, :, :end]."""
    element = _ONNX_DTYPES[dtype]
    inputs, outputs = prefix_names(num_layers)
    shape = ["batch", kv_heads, "length", head_dim]
    graph = helper.make_graph(
        [
            helper.make_node("Slice", [source, "zero", PREFIX_INPUTS[0], "axis"], [target])
            for source, target in zip(inputs, outputs, strict=True)
        ],
        "kv_prefix",
        [helper.make_tensor_value_info(PREFIX_INPUTS[0], TensorProto.INT64, [1])]
        + [helper.make_tensor_value_info(name, element, shape) for name in inputs],
        [
            helper.make_tensor_value_info(name, element, ["batch", kv_heads, "end", head_dim])
            for name in outputs
        ],
        initializer=[
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="echo")
    model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime >= 1.18
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
