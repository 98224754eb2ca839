"""Provider choice: the best available by default, an operator's choice honoured or refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from echo.errors import UserError
from echo.runtime.providers import (
    CPU,
    CUDA,
    TENSORRT,
    check_provider_setting,
    choose_for_setting,
    choose_providers,
    parse_providers,
    session_fallback,
)

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


# --- ECHO_ORT_PROVIDER, as a worker reads it -----------------------------------------------------

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_BUILD = ["AzureExecutionProvider", "CPUExecutionProvider"]


def test_the_setting_is_normalised_and_a_typo_is_refused_at_start() -> None:
    assert check_provider_setting(" Auto ") == "auto" and check_provider_setting("") == "auto"
    assert check_provider_setting("CUDA, CPUExecutionProvider") == "cuda,cpu"
    assert check_provider_setting("trt,cuda") == "tensorrt,cuda"
    with pytest.raises(UserError, match="unknown execution provider 'gpu'"):
        check_provider_setting("gpu")


def test_auto_takes_the_best_this_install_offers_without_a_warning() -> None:
    choice = choose_for_setting("auto", GPU_BUILD)
    assert (choice.providers, choice.fallback) == ([TENSORRT, CUDA, CPU], None)
    assert choose_for_setting("auto", CPU_BUILD).providers == [CPU]
    assert choice.summary() == (
        "onnxruntime providers: Tensorrt, CUDA, CPU (ECHO_ORT_PROVIDER=auto; this install offers Tensorrt, CUDA, CPU)"
    )


def test_cuda_asked_and_present_is_used_first() -> None:
    choice = choose_for_setting("cuda", GPU_BUILD)
    assert (choice.providers, choice.fallback) == ([CUDA, CPU], None)


def test_cuda_asked_on_a_cpu_onnxruntime_falls_back_to_the_cpu_with_a_warning() -> None:
    choice = choose_for_setting("cuda", CPU_BUILD)
    assert choice.providers == [CPU]
    assert choice.fallback == (
        "ECHO_ORT_PROVIDER=cuda: this onnxruntime has no CUDA (it offers Azure, CPU); running on CPU "
        "(slow: install onnxruntime-gpu and the CUDA libraries)"
    )


def test_a_missing_tensorrt_falls_back_to_the_next_provider_named() -> None:
    choice = choose_for_setting("tensorrt,cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choice.providers == [CUDA, CPU]
    assert (
        choice.fallback is not None
        and "no Tensorrt" in choice.fallback
        and "running on CUDA" in choice.fallback
    )
    assert "slow" not in choice.fallback


def test_a_session_that_dropped_the_gpu_is_reported() -> None:
    assert session_fallback([CUDA, CPU], [CUDA, CPU]) is None
    assert session_fallback([CPU], [CPU]) is None
    warning = session_fallback([CUDA, CPU], [CPU])
    assert warning is not None and warning.startswith(
        "onnxruntime could not start CUDA and runs the model on CPU (slow)"
    )
    assert "(slow)" not in (session_fallback([TENSORRT, CUDA, CPU], [CUDA, CPU]) or "(slow)")


def test_the_engine_runs_on_what_the_setting_chose() -> None:
    import onnxruntime as ort

    from echo.runtime import Engine

    bundled = Path(__file__).resolve().parents[2] / "echo" / "assets" / "models" / "student-onnx"
    choice = choose_for_setting("cuda", ort.get_available_providers())  # CPU here; CUDA on a GPU host
    engine = Engine.load(bundled, providers=choice.providers, threads=1, warm_up=False)
    assert session_fallback(choice.providers, engine.providers) is None
    assert engine.providers[0] == choice.providers[0]
