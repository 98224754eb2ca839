"""How an inference attempt can fail, sorted by what the worker does next (see `worker.inference`):
retry it later (`TransientInferenceError`), or fail the study at once (`UnusableStudy`)."""

from __future__ import annotations


class TransientInferenceError(RuntimeError):
    """A failure a later try may not meet (model not loadable now, spool not reachable now)."""


class EngineUnavailable(TransientInferenceError):
    """The engine could not be loaded (missing or half-copied model, GPU not ready)."""


class SpoolUnavailable(TransientInferenceError):
    """An image file could not be read for a reason other than its content (I/O error, mount gone)."""


class UnusableStudy(ValueError):
    """The study cannot be reported: retrying would fail the same way. The message is the reason."""
