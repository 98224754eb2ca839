"""The KV cache between decoder forwards: a fully kept present is taken as it is, a prefix is
copied into one buffer reused every step, and nothing kept leaves the past untouched; the device
cache does the same over OrtValues, cutting prefixes with kv_prefix.onnx where the values lie."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from echo.runtime.kv_cache import DeviceKVCache, KVCache, Transfers

LAYERS, BATCH, HEADS, DIM, CAPACITY = 2, 2, 3, 4, 40


def present(past: int, new: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((BATCH, HEADS, past + new, DIM), dtype=np.float32) for _ in range(2 * LAYERS)]


def new_cache() -> KVCache:
    return KVCache(LAYERS, BATCH, HEADS, DIM, CAPACITY, np.float32)


def test_an_empty_cache_has_zero_length_pasts_in_the_graphs_layout() -> None:
    cache = new_cache()
    assert cache.length == 0
    assert [p.shape for p in cache.past] == [(BATCH, HEADS, 0, DIM)] * (2 * LAYERS)


def test_a_fully_kept_present_becomes_the_past_without_a_copy() -> None:
    cache = new_cache()
    step = present(0, 5, seed=0)
    cache.keep(step, 5)
    assert cache.length == 5
    assert all(past is value for past, value in zip(cache.past, step, strict=True))


def test_a_kept_prefix_is_copied_into_one_reused_buffer() -> None:
    cache = new_cache()
    first = present(0, 12, seed=1)
    cache.keep(first, 8)  # a block step: the masks' 4 positions are dropped
    assert cache.length == 8
    for past, value in zip(cache.past, first, strict=True):
        assert past.shape == (BATCH, HEADS, 8, DIM) and past.flags.c_contiguous
        assert np.array_equal(past, value[:, :, :8])
    buffers = [past.base for past in cache.past]
    second = present(8, 12, seed=2)
    cache.keep(second, 14)
    for past, value, buffer in zip(cache.past, second, buffers, strict=True):
        assert np.array_equal(past, value[:, :, :14])
        assert np.shares_memory(past, buffer)  # the same memory, viewed at the new length


def test_keeping_nothing_new_leaves_the_past_as_it_was() -> None:
    cache = new_cache()
    cache.keep(present(0, 6, seed=3), 6)
    before = list(cache.past)
    cache.keep(present(6, 8, seed=4), 6)  # a denoising step: the window's keys are not kept
    assert cache.length == 6 and all(a is b for a, b in zip(cache.past, before, strict=True))


def test_rows_leave_the_cache_and_it_refuses_to_overflow_or_shrink() -> None:
    cache = new_cache()
    step = present(0, 6, seed=5)
    cache.keep(step, 4)
    cache.keep_rows(np.array([1]))
    assert cache.batch == 1
    assert all(np.array_equal(past, value[1:, :, :4]) for past, value in zip(cache.past, step, strict=True))
    with pytest.raises(AssertionError, match="capacity 40"):
        cache.keep(present(4, CAPACITY, seed=6)[:1], CAPACITY + 4)
    with pytest.raises(AssertionError, match="past 4"):
        cache.keep(present(0, 3, seed=7), 2)


@pytest.fixture(scope="module")
def prefix_session(tmp_path_factory):
    from echo.export.kv_prefix import write_kv_prefix_graph

    path = tmp_path_factory.mktemp("kv") / "kv_prefix.onnx"
    write_kv_prefix_graph(path, LAYERS, HEADS, DIM, "float32", 18)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def device_values(arrays: list[np.ndarray]) -> list[ort.OrtValue]:
    return [ort.OrtValue.ortvalue_from_numpy(array, "cpu", 0) for array in arrays]


def test_a_device_cache_keeps_ortvalues_and_cuts_prefixes_with_the_prefix_graph(prefix_session) -> None:
    transfers = Transfers()
    cache = DeviceKVCache(prefix_session, LAYERS, BATCH, HEADS, DIM, np.float32, "cpu", transfers)
    assert [value.shape() for value in cache.past] == [[BATCH, HEADS, 0, DIM]] * (2 * LAYERS)
    first = present(0, 6, seed=8)
    values = device_values(first)
    cache.keep(values, 6)  # fully kept: the present itself, no graph run
    assert all(past is value for past, value in zip(cache.past, values, strict=True))
    assert transfers == Transfers(0, 0)
    second = present(6, 5, seed=9)
    cache.keep(device_values(second), 8)  # a block step drops 3 positions on the device
    assert cache.length == 8 and transfers == Transfers(to_device=8, to_host=0)  # the `end` scalar only
    for past, value in zip(cache.past, second, strict=True):
        assert isinstance(past, ort.OrtValue) and past.device_name() == "cpu"
        assert np.array_equal(past.numpy(), value[:, :, :8])
    before = list(cache.past)
    cache.keep(device_values(present(8, 4, seed=10)), 8)  # nothing new kept
    assert all(a is b for a, b in zip(cache.past, before, strict=True))
    cache.keep_rows(np.array([1]))  # through the host: read all, write the kept row back
    assert cache.batch == 1 and [v.shape() for v in cache.past] == [[1, HEADS, 8, DIM]] * (2 * LAYERS)
    assert all(
        np.array_equal(past.numpy(), value[1:, :, :8]) for past, value in zip(cache.past, second, strict=True)
    )
    kv_bytes = BATCH * HEADS * 8 * DIM * 4 * 2 * LAYERS
    assert transfers == Transfers(to_device=8 + kv_bytes // 2, to_host=kv_bytes)
    with pytest.raises(AssertionError, match="past 8"):
        cache.keep(device_values(present(0, 3, seed=11)), 2)
