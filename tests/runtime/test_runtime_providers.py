"""Provider choice: the best available by default, an operator's choice honoured or refused."""

from __future__ import annotations

import pytest

from echo.errors import UserError
from echo.runtime.providers import CPU, CUDA, TENSORRT, choose_providers, parse_providers

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "AzureExecutionProvider", "CPUExecutionProvider"]


def test_default_is_tensorrt_then_cuda_then_cpu() -> None:
    assert choose_providers(None, ALL) == [TENSORRT, CUDA, CPU]
    assert choose_providers(None, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [CUDA, CPU]
    assert choose_providers(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == [CPU]


def test_short_names_are_accepted_and_cpu_is_always_the_fallback() -> None:
    assert parse_providers(" CUDA , trt ") == [CUDA, TENSORRT]
    assert choose_providers("cuda", ALL) == [CUDA, CPU]
    assert choose_providers(["cpu"], ALL) == [CPU]
    assert choose_providers("cpu,cpu", ALL) == [CPU]


def test_an_unavailable_provider_is_refused_with_what_is_available() -> None:
    with pytest.raises(
        UserError, match=r"CUDAExecutionProvider is not available .*available: CPUExecutionProvider\)"
    ):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_unknown_or_empty_provider_names_are_refused() -> None:
    with pytest.raises(UserError, match="unknown execution provider 'gpu'"):
        choose_providers("gpu", ALL)
    with pytest.raises(UserError, match="no execution provider named"):
        parse_providers(" , ")
