"""An exported directory's embedding table and tokenizer, opened and checked against its manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from echo.errors import UserError
from echo.runtime.manifest import ModelManifest


def load_embeddings(path: Path, manifest: ModelManifest) -> np.ndarray:
    """The (vocab, hidden) table, memory-mapped: pages are read as tokens are looked up."""
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a numpy array file ({error})") from None
    expected = (manifest.text.vocab_size, manifest.text.hidden_size)
    if table.shape != expected or table.dtype != np.dtype(manifest.dtype):
        raise UserError(
            f"{path}: holds {table.dtype} {table.shape}, the manifest says {manifest.dtype} {expected}"
        )
    return table


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on bad JSON
        raise UserError(f"{path} is not a tokenizer.json: {str(error).splitlines()[0]}") from None
