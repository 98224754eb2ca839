"""A tiny model, tokenizer and in-memory example set: enough for the stages' losses to be exercised."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echo.data.preprocess import PreprocessConfig
from echo.model import EchoVLConfig, EchoVLM
from echo.tokenizer import ReportTokenizer
from echo.training.batches import Batcher
from echo.training.examples import ExampleSet

REPORTS = [
    "FINDINGS: Lungs are clear. No pleural effusion. Heart size is normal.\nIMPRESSION: No acute disease.",
    "FINDINGS: Small left pleural effusion. Heart size is normal.\nIMPRESSION: Left pleural effusion.",
    "FINDINGS: Right lower lobe consolidation. No pneumothorax.\nIMPRESSION: Right lower lobe pneumonia.",
    "FINDINGS: Heart size is enlarged. Lungs are clear.\nIMPRESSION: Cardiomegaly.",
]
SIDE = 56  # 4 x 4 patches -> 4 image tokens
PREPROCESS = PreprocessConfig(min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE)


@pytest.fixture(scope="session")
def tokenizer() -> ReportTokenizer:
    return ReportTokenizer.train(REPORTS * 4, vocab_size=320, min_frequency=1)


def make_model(tokenizer: ReportTokenizer, seed: int = 0, block_size: int = 4) -> EchoVLM:
    torch.manual_seed(seed)
    config = EchoVLConfig.tiny(
        vocab_size=tokenizer.vocab_size, block_size=block_size, preprocess=PREPROCESS.to_dict()
    )
    return EchoVLM(config)


@pytest.fixture
def model(tokenizer) -> EchoVLM:
    return make_model(tokenizer)


def example_set(n: int, seed: int = 0) -> ExampleSet:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, SIDE, SIDE), dtype=np.uint8)
    for i in range(n):  # a visible cue per report, so a model can tell them apart
        images[i, : 8 * (1 + i % 4)] = 255
    reports = [REPORTS[i % len(REPORTS)] for i in range(n)]
    return ExampleSet([f"s{i}" for i in range(n)], reports, list(images), [{} for _ in range(n)])


@pytest.fixture
def batcher(tokenizer) -> Batcher:
    return Batcher(example_set(8), tokenizer, "Describe.", PREPROCESS, block_size=4, max_response_tokens=64)


def collect_with_eos_bias(model, batcher, indices, tokenizer, bias: float, **options):
    """`collect` from a teacher pushed towards eos by `bias` logits, so its trajectories end."""
    from echo.training.dcd_stage import collect

    eos_bias = torch.zeros(tokenizer.vocab_size)
    eos_bias[tokenizer.eos_id] = bias
    handle = model.lm_head.register_forward_hook(lambda _m, _i, out: out + eos_bias)
    try:
        defaults = dict(block_size=4, threshold=0.85, max_new_tokens=16, batch_size=4, description="test")
        return collect(model.eval(), batcher, indices, eos_id=tokenizer.eos_id, **{**defaults, **options})
    finally:
        handle.remove()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models gain nothing from threads; one keeps the suite steady on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
